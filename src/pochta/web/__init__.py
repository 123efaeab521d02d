"""HTTP: mail client autoconfig and autodiscover, the MTA-STS policy, metrics, health."""
