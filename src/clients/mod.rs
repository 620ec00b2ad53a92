//! Clients of the external services (NCA Toolkit, GoAPI).
