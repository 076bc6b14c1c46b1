//! The one error type: which element is wrong, and a sentence saying why.

/// Why a document was refused, from the outermost layer inwards.
///
/// The daemon can map these to HTTP answers (for example `TooLarge` to 413 and the rest
/// to 422) while showing [`CapError::element`] and [`CapError::detail`] to the sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum CapErrorKind {
    /// Bigger than [`crate::MAX_BYTES`]; nothing was parsed.
    TooLarge,
    /// The character encoding is missing, inconsistent, unsupported or the bytes do not
    /// decode in it.
    Encoding,
    /// A construct refused for safety: a `DOCTYPE` (and with it DTDs and entity
    /// declarations), or a reference to an entity other than XML's five predefined ones.
    Forbidden,
    /// Not well-formed XML (or not namespace-well-formed).
    Malformed,
    /// Well-formed, but not valid against the CAP 1.2 schema (`cap12.xsd`).
    Schema,
    /// Valid against the schema, but breaks a rule of the CAP 1.2 specification that the
    /// schema does not express (for example an `Update` without `references`).
    Rule,
}

/// A refused CAP document (or, from [`crate::validate`], a model that cannot be published).
///
/// `element` names where the problem is:
/// - a path of element names from the root, with a zero-based index on elements that may
///   repeat: `alert/info[0]/area[1]/polygon[0]`, `alert/references`;
/// - `alert` for problems with the root element itself;
/// - `(document)` for problems that belong to no element (size, encoding, DOCTYPE, syntax).
///
/// `detail` is an English sentence saying what is wrong and what is allowed instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{element}: {detail}")]
pub struct CapError {
    /// Which layer refused the document.
    pub kind: CapErrorKind,
    /// Where: an element path, `alert`, or `(document)`.
    pub element: String,
    /// What is wrong, and what would be accepted.
    pub detail: String,
}

/// The `element` of problems that belong to the document as a whole.
pub(crate) const DOCUMENT: &str = "(document)";

impl CapError {
    pub(crate) fn new(
        kind: CapErrorKind,
        element: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        CapError {
            kind,
            element: element.into(),
            detail: detail.into(),
        }
    }

    /// A document-level problem (`element` is `(document)`).
    pub(crate) fn document(kind: CapErrorKind, detail: impl Into<String>) -> Self {
        Self::new(kind, DOCUMENT, detail)
    }

    pub(crate) fn schema(element: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(CapErrorKind::Schema, element, detail)
    }

    pub(crate) fn rule(element: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(CapErrorKind::Rule, element, detail)
    }
}
