//! Replicas and client proxies: SMR, P-SMR, opt-PSMR, S-SMR and DS-SMR (scale-up and scale-out issues).
