"""Loading: load and delete card APs through the loading service, journalled, audited and
reconciled when cut short; the card APs a card holds."""
