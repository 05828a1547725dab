//! The init container: iptables capture rules for a pod network namespace.
