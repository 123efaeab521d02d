"""Delivery agents: the local mailbox agent now; smtp, lmtp, relay and pipe come next."""
