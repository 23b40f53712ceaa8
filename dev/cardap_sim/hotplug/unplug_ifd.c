/*
 * cardap-sim "unpluggable reader": an IFD handler that forwards every call to
 * vsmartcard's libifdvpcd.so and answers IFD_NO_SUCH_DEVICE while a flag file exists.
 *
 * Why: a vpcd reader never disappears, but a USB reader does. IFD_NO_SUCH_DEVICE is
 * exactly what a CCID driver answers once its device is unplugged; pcscd then runs its
 * real removal path (SendHotplugSignal -> RFReCheckReaderConf -> RFRemoveReader) and
 * every client sees the reader leave through the PnP notification. Removing the flag
 * and sending pcscd SIGUSR1 (what `pcscd --hotplug` does) adds the reader back.
 *
 * It also plays a CCID reader that gives up on a mute card: when the simulator answers
 * a command with its READER_TIMEOUT frame (fault reader_timeout_ms), the shim returns
 * IFD_COMMUNICATION_ERROR, which is what libccid returns when the reader reports the card
 * mute or its read times out; pcscd then answers SCardTransmit with
 * SCARD_E_NOT_TRANSACTED and the card stays in the reader.
 *
 * Environment (read by pcscd's process): CARDAP_SIM_VPCD_DRIVER = path of
 * libifdvpcd.so, CARDAP_SIM_UNPLUG_FLAG = path of the flag file.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <unistd.h>
#include <PCSC/ifdhandler.h>

static void *inner;

static int unplugged(void)
{
	const char *flag = getenv("CARDAP_SIM_UNPLUG_FLAG");
	return flag != NULL && access(flag, F_OK) == 0;
}

static void *sym(const char *name)
{
	if (inner == NULL) {
		const char *path = getenv("CARDAP_SIM_VPCD_DRIVER");
		inner = dlopen(path ? path : "/usr/lib/pcsc/drivers/serial/libifdvpcd.so",
			       RTLD_NOW | RTLD_LOCAL);
		if (inner == NULL) {
			fprintf(stderr, "unplug_ifd: %s\n", dlerror());
			return NULL;
		}
	}
	return dlsym(inner, name);
}

#define FORWARD(name, ...)                                         \
	__typeof__(name) *fn = (__typeof__(name) *)sym(#name);     \
	if (fn == NULL)                                            \
		return IFD_COMMUNICATION_ERROR;                    \
	return fn(__VA_ARGS__)

RESPONSECODE IFDHCreateChannelByName(DWORD Lun, LPSTR DeviceName)
{
	if (unplugged())
		return IFD_NO_SUCH_DEVICE;
	FORWARD(IFDHCreateChannelByName, Lun, DeviceName);
}

RESPONSECODE IFDHCreateChannel(DWORD Lun, DWORD Channel)
{
	if (unplugged())
		return IFD_NO_SUCH_DEVICE;
	FORWARD(IFDHCreateChannel, Lun, Channel);
}

RESPONSECODE IFDHCloseChannel(DWORD Lun)
{
	/* Always forwarded: vpcd must release its port so the reader can come back. */
	FORWARD(IFDHCloseChannel, Lun);
}

RESPONSECODE IFDHGetCapabilities(DWORD Lun, DWORD Tag, PDWORD Length, PUCHAR Value)
{
	FORWARD(IFDHGetCapabilities, Lun, Tag, Length, Value);
}

RESPONSECODE IFDHSetCapabilities(DWORD Lun, DWORD Tag, DWORD Length, PUCHAR Value)
{
	if (unplugged())
		return IFD_NO_SUCH_DEVICE;
	FORWARD(IFDHSetCapabilities, Lun, Tag, Length, Value);
}

RESPONSECODE IFDHSetProtocolParameters(DWORD Lun, DWORD Protocol, UCHAR Flags,
				       UCHAR PTS1, UCHAR PTS2, UCHAR PTS3)
{
	if (unplugged())
		return IFD_NO_SUCH_DEVICE;
	FORWARD(IFDHSetProtocolParameters, Lun, Protocol, Flags, PTS1, PTS2, PTS3);
}

RESPONSECODE IFDHPowerICC(DWORD Lun, DWORD Action, PUCHAR Atr, PDWORD AtrLength)
{
	if (unplugged())
		return IFD_NO_SUCH_DEVICE;
	FORWARD(IFDHPowerICC, Lun, Action, Atr, AtrLength);
}

RESPONSECODE IFDHTransmitToICC(DWORD Lun, SCARD_IO_HEADER SendPci, PUCHAR TxBuffer,
			       DWORD TxLength, PUCHAR RxBuffer, PDWORD RxLength,
			       PSCARD_IO_HEADER RecvPci)
{
	static const char timeout[] = "\x00" "CARDAP-SIM:READER-TIMEOUT";
	__typeof__(IFDHTransmitToICC) *fn;
	RESPONSECODE rv;

	if (unplugged())
		return IFD_NO_SUCH_DEVICE;
	fn = (__typeof__(IFDHTransmitToICC) *)sym("IFDHTransmitToICC");
	if (fn == NULL)
		return IFD_COMMUNICATION_ERROR;
	rv = fn(Lun, SendPci, TxBuffer, TxLength, RxBuffer, RxLength, RecvPci);
	if (rv == IFD_SUCCESS && RxLength != NULL && *RxLength == sizeof(timeout) - 1
	    && memcmp(RxBuffer, timeout, sizeof(timeout) - 1) == 0) {
		*RxLength = 0;
		return IFD_COMMUNICATION_ERROR; /* the reader gave up on the card */
	}
	return rv;
}

RESPONSECODE IFDHControl(DWORD Lun, DWORD dwControlCode, PUCHAR TxBuffer, DWORD TxLength,
			 PUCHAR RxBuffer, DWORD RxLength, LPDWORD pdwBytesReturned)
{
	if (unplugged())
		return IFD_NO_SUCH_DEVICE;
	FORWARD(IFDHControl, Lun, dwControlCode, TxBuffer, TxLength, RxBuffer, RxLength, pdwBytesReturned);
}

RESPONSECODE IFDHICCPresence(DWORD Lun)
{
	if (unplugged())
		return IFD_NO_SUCH_DEVICE;
	FORWARD(IFDHICCPresence, Lun);
}

__attribute__((destructor)) static void unload(void)
{
	if (inner != NULL)
		dlclose(inner);
}
