"""The other built-in APs: card face, 住基, and the text input assist AP (fake My Number)."""

from __future__ import annotations

from typing import ClassVar

from .applet import Applet
from .files import BinaryFile, PinFile, PinState

CARD_FACE_AID = bytes.fromhex("D3921000310001010402")
JUKI_AID = bytes.fromhex("D3921000310001010401")
INPUT_ASSIST_AID = bytes.fromhex("D3921000310001010408")
FID_MY_NUMBER = 0x0001
FID_INPUT_ASSIST_PIN = 0x0011
DEFAULT_INPUT_ASSIST_PIN = "1234"
INPUT_ASSIST_PIN_TRIES = 3


class CardFaceApplet(Applet):
    """券面事項確認AP: answers SELECT, nothing else is modelled."""

    def __init__(self) -> None:
        super().__init__(CARD_FACE_AID)


class JukiApplet(Applet):
    """住基AP: answers SELECT, nothing else is modelled."""

    def __init__(self) -> None:
        super().__init__(JUKI_AID)


class InputAssistApplet(Applet):
    """入力補助AP: EF 0001 holds a fake My Number, readable only after VERIFY of the AP's
    4-digit PIN (EF 0011, 3 tries), as on a real card; its responses are never logged."""

    redact_responses: ClassVar[bool] = True

    def __init__(self, my_number: str, pin: PinState) -> None:
        super().__init__(INPUT_ASSIST_AID)
        self.files = {
            FID_MY_NUMBER: BinaryFile(my_number.encode("ascii"), needs_pin=FID_INPUT_ASSIST_PIN),
            FID_INPUT_ASSIST_PIN: PinFile(pin),
        }

    def __repr__(self) -> str:
        """Never show the file content."""
        return "InputAssistApplet(<redacted>)"
