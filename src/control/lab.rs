//! The network-namespace lab (`tollgate lab up|down|status|run`).
