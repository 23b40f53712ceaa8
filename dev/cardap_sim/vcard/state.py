"""The persistent card state and its JSON card file, written atomically (tmp+fsync+rename)."""

from __future__ import annotations

import base64
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cardlib.gp.keys import StaticKeys

from .applet import LoadedApplet
from .areas import EXTENDED_AREA_AID, REGIONAL_AREA_AID, REGIONAL_AREA_CAPACITY, LoadFile
from .builtin_aps import DEFAULT_INPUT_ASSIST_PIN, INPUT_ASSIST_PIN_TRIES
from .cardkeys import DEV_MASTER_KEYS, diversify, kdd_from_cplc, keys_from_json, keys_to_json
from .certgen import JpkiCertificates, virtual_cas
from .errors import CardFileError
from .files import PinState
from .instances import applet_from_json

FORMAT = "cardap-vcard/1"


@dataclass
class CardState:
    """Everything that survives power-off and removal: one JSON file per card."""

    profile: str
    cplc: dict[str, str]
    my_number: str = field(repr=False)
    auth_pin: PinState = field(repr=False)
    sign_pin: PinState = field(repr=False)
    auth_cert: bytes | None = field(repr=False)
    extended_area_capacity: int
    aps: list[LoadedApplet] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict, repr=False)
    keys: StaticKeys | None = field(default=None, repr=False)
    sequence_counter: int = 0
    regional_area_capacity: int = REGIONAL_AREA_CAPACITY
    load_files: list[LoadFile] = field(default_factory=list)
    sign_cert: bytes | None = field(default=None, repr=False)
    auth_ca_cert: bytes = field(default=b"", repr=False)
    sign_ca_cert: bytes = field(default=b"", repr=False)
    input_assist_pin: PinState = field(
        default_factory=lambda: PinState(DEFAULT_INPUT_ASSIST_PIN, INPUT_ASSIST_PIN_TRIES,
                                         INPUT_ASSIST_PIN_TRIES), repr=False)

    def __post_init__(self) -> None:
        """Cards created or stored without keys get the dev master's diversification;
        card files written before the CA certificates were modelled get the virtual CAs'."""
        if self.keys is None:
            self.keys = diversify(DEV_MASTER_KEYS, kdd_from_cplc(self.cplc))
        if not self.auth_ca_cert or not self.sign_ca_cert:
            auth_ca, sign_ca = virtual_cas()
            self.auth_ca_cert = self.auth_ca_cert or auth_ca.der
            self.sign_ca_cert = self.sign_ca_cert or sign_ca.der

    @property
    def certificates(self) -> JpkiCertificates:
        """The JPKI AP's certificate files."""
        return JpkiCertificates(self.auth_cert, self.auth_ca_cert, self.sign_cert,
                                self.sign_ca_cert)

    @property
    def static_keys(self) -> StaticKeys:
        """The card's already-diversified static SCP03 keys."""
        assert self.keys is not None  # set by __post_init__
        return self.keys

    def area_capacity(self, area: bytes) -> int:
        """Fixed capacity in bytes of the area with this AID."""
        return (self.extended_area_capacity if area == EXTENDED_AREA_AID
                else self.regional_area_capacity)

    def area_used(self, area: bytes) -> int:
        """Bytes used in an area: the load files counted against it, half-loaded ones too."""
        return sum(lf.size for lf in self.load_files if lf.area == area)

    @property
    def extended_area_used(self) -> int:
        """Bytes used in the extended area."""
        return self.area_used(EXTENDED_AREA_AID)

    def to_json(self) -> dict[str, Any]:
        """The card file's content (unknown keys read earlier are written back unchanged)."""
        return {
            **self.extra,
            "format": FORMAT,
            "profile": self.profile,
            "cplc": dict(self.cplc),
            "my_number": self.my_number,
            "jpki": {
                "auth_pin": self.auth_pin.to_json(),
                "sign_pin": self.sign_pin.to_json(),
                "auth_cert": _b64(self.auth_cert),
                "sign_cert": _b64(self.sign_cert),
                "auth_ca_cert": _b64(self.auth_ca_cert),
                "sign_ca_cert": _b64(self.sign_ca_cert),
            },
            "input_assist": {"pin": self.input_assist_pin.to_json()},
            "areas": {"extended": {"capacity": self.extended_area_capacity,
                                   "used": self.extended_area_used},
                      "regional": {"capacity": self.regional_area_capacity,
                                   "used": self.area_used(REGIONAL_AREA_AID)}},
            "aps": [ap.to_json() for ap in self.aps],
            "keys": keys_to_json(self.static_keys, self.sequence_counter),
            "load_files": [lf.to_json() for lf in self.load_files],
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> CardState:
        """Inverse of to_json; raises CardFileError on anything malformed."""
        if d.get("format") != FORMAT:
            raise CardFileError(f"not a card file of format {FORMAT}")
        known = {"format", "profile", "cplc", "my_number", "jpki", "areas", "aps", "keys",
                 "load_files", "input_assist"}
        try:
            jpki = d["jpki"]
            ext = d["areas"]["extended"]
            regional = d["areas"].get("regional", {"capacity": REGIONAL_AREA_CAPACITY})
            # `used` is derived from the load files; the stored figure is informational.
            # Card files written before issue 4 carry no keys: __post_init__ then derives
            # them from the dev master keys with the card's KDD (counter 0).
            keys, counter = keys_from_json(d["keys"]) if "keys" in d else (None, 0)
            return cls(
                profile=str(d["profile"]),
                cplc={str(k): str(v) for k, v in d["cplc"].items()},
                my_number=str(d["my_number"]),
                auth_pin=PinState.from_json(jpki["auth_pin"]),
                sign_pin=PinState.from_json(jpki["sign_pin"]),
                auth_cert=_unb64(jpki["auth_cert"]),
                extended_area_capacity=int(ext["capacity"]),
                aps=[applet_from_json(a) for a in d["aps"]],
                extra={k: v for k, v in d.items() if k not in known},
                keys=keys,
                sequence_counter=counter,
                regional_area_capacity=int(regional["capacity"]),
                load_files=[LoadFile.from_json(x) for x in d.get("load_files", [])],
                sign_cert=_unb64(jpki.get("sign_cert")),
                auth_ca_cert=_unb64(jpki.get("auth_ca_cert")) or b"",
                sign_ca_cert=_unb64(jpki.get("sign_ca_cert")) or b"",
                **({"input_assist_pin": PinState.from_json(d["input_assist"]["pin"])}
                   if "input_assist" in d else {}),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CardFileError(f"malformed card file: {exc!r}") from exc


def _b64(value: bytes | None) -> str | None:
    return None if value is None else base64.b64encode(value).decode("ascii")


def _unb64(value: object) -> bytes | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError("a certificate must be base64 text or null")
    return base64.b64decode(value, validate=True)


def save_atomic(path: Path, state: CardState) -> None:
    """Write the card file so a crash leaves either the old or the new file, never half."""
    text = json.dumps(state.to_json(), indent=1, sort_keys=True) + "\n"
    directory = path.parent
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load_file(path: Path) -> CardState:
    """Read a card file; CardFileError when missing or malformed."""
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CardFileError(f"cannot read card file {path}: {exc}") from exc
    if not isinstance(d, dict):
        raise CardFileError(f"card file {path} is not a JSON object")
    return CardState.from_json(d)
