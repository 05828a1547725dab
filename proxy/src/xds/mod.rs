//! The proxy's discovery client: one gRPC stream to the control plane, ACK/NACK, reconnect with backoff.
