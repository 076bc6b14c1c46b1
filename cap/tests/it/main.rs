//! noroshi-cap's tests, in one binary (one link step instead of five).
//!
//! - `conformance`: every sample alert in shared/conformance/oasis-cap-1.2/alerts;
//! - `example`: the CHANNELS.md §5.3 example alert;
//! - `mutations`: one refusal per kind of mistake, each naming the element;
//! - `writing`: `to_xml`, `validate` and `file_name`;
//! - `xmllint`: `to_xml` output and generated mutations checked by libxml2 against the
//!   real cap12.xsd (skipped when xmllint is not installed);
//! - `properties`: proptest (no panics; refusals always say where and why; round trips).

mod common;
mod conformance;
mod example;
mod mutations;
mod properties;
mod writing;
mod xmllint;
