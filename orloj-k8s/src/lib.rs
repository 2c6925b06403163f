//! # orloj-k8s
//!
//! Kubernetes backends for Orloj. Empty for now: the Job-based tool executor, agent runner and
//! the CRD operator land with the Kubernetes issues.
