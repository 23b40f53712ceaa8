"""Layer 2: ISO/IEC 7816-4 APDUs, status words, chaining, BER-TLV and traffic logging."""
