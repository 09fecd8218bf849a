//! A replicated in-memory B+-tree service on the engine (scale-up issue).
