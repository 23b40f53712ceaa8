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
 * Environment (read by pcscd's process): CARDAP_SIM_VPCD_DRIVER = path of
 * libifdvpcd.so, CARDAP_SIM_UNPLUG_FLAG = path of the flag file.
 */
#include <dlfcn.h>
#include <stdio.h>
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
	if (unplugged())
		return IFD_NO_SUCH_DEVICE;
	FORWARD(IFDHTransmitToICC, Lun, SendPci, TxBuffer, TxLength, RxBuffer, RxLength, RecvPci);
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
