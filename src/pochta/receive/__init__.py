"""asyncio servers around the sans-IO SMTP core: MX (25), submission (587, 465), LMTP."""
