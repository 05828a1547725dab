//! The proxy-facing API: discovery protocol and proxy resources, plus the translator from the mesh model.
