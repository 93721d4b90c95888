//! Errors, each naming the Kubernetes object it is about, as `kubectl` names them.

use std::fmt;

/// A Kubernetes object's identity in messages: `KongPlugin api-gateway-demo/rate-limit`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Resource {
    pub kind: String,
    /// Empty for cluster-scoped kinds (`KongClusterPlugin`).
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// Why a file cannot be translated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The file is not YAML, or is too large.
    #[error("manifests: {0}")]
    File(String),
    /// A document that is not a Kubernetes object (no `kind`, `apiVersion` or name).
    #[error("document {index}: {problem}")]
    Document { index: usize, problem: String },
    /// An object the controller would refuse, and why.
    #[error("{resource}: {problem}")]
    Object { resource: Resource, problem: String },
}

impl Error {
    pub fn object(resource: &Resource, problem: impl Into<String>) -> Error {
        Error::Object {
            resource: resource.clone(),
            problem: problem.into(),
        }
    }
}

/// Every problem found in one translation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Errors(pub Vec<Error>);

impl fmt::Display for Errors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Errors {}
