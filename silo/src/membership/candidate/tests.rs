//! Election tests (to come).
