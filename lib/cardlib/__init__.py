"""cardlib: talking to a smart card, and nothing of the programs that do.

ISO/IEC 7816-4 APDUs and status words (`apdu`), BER-TLV (`tlv`), the two-method
`CardConnection` interface (`connection`), an APDU processor with response chaining and
cancellation (`protocol`), a TRAFFIC log level that redacts secrets (`traffic`), and
GlobalPlatform card content management (`gp`: SCP03 and its primitives, key stores, the
registry, command builders). Its errors are its own (`errors`). The daemon, the virtual
card and the reference loading service all use it; it imports none of them.
"""
