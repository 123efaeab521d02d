"""asyncio servers for mail access: IMAP and POP3 over the mailbox store."""
