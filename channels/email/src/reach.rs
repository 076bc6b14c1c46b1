//! Reach for email: nothing to ask the SMTP server for.
//!
//! Submission servers report no followers or opens (and Noroshi assumes no open
//! tracking), so the channel keeps `Channel::fetch_reach`'s default (no samples); the
//! daemon counts active subscribers itself.
