"""TLS for every listener: self-signed certificates for first start, and the server context."""
