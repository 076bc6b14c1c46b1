//! The LINE, X and Facebook fakes (the adapter crates' own, `fake` feature) on 127.0.0.1,
//! and what they recorded: every request with the `Instant` it arrived.

use std::time::Instant;

use noroshi_channel_core::fake::RecordedRequest;

use crate::disaster::LineMode;

pub const LINE_TOKEN: &str = "bench-line-channel-token-4e1d";
pub const FB_TOKEN: &str = "bench-facebook-page-token-8a2c";
pub const FB_PAGE: &str = "102030405060708";
/// The one friend a `multicast` run sends to.
pub const LINE_USER: &str = "U4af4980629a1b2c3d4e5f60718293a4b";

/// The platforms, in the order every table prints them.
pub const PLATFORMS: [&str; 3] = ["line", "x", "facebook"];

pub struct Fakes {
    pub line: noroshi_line::fake::FakeLine,
    pub x: noroshi_x::fake::FakeX,
    pub facebook: noroshi_facebook::fake::FakeGraph,
    line_mode: LineMode,
}

impl Fakes {
    pub async fn start(line_mode: LineMode) -> Fakes {
        Fakes {
            line: noroshi_line::fake::start(noroshi_line::fake::FakeOptions {
                access_token: LINE_TOKEN.into(),
                // A paid plan without a target limit: the quota never stops an alert here.
                monthly_limit: None,
                ..Default::default()
            })
            .await,
            x: noroshi_x::fake::start().await,
            facebook: noroshi_facebook::fake::start(FB_PAGE, FB_TOKEN).await,
            line_mode,
        }
    }

    /// Every POST each platform received: (arrival, body), per platform of [`PLATFORMS`].
    pub fn posts(&self) -> [Vec<(Instant, String)>; 3] {
        let pick = |reqs: Vec<RecordedRequest>| {
            reqs.into_iter()
                .filter(|r| r.method == "POST")
                .map(|r| (r.at, r.body_text))
                .collect::<Vec<_>>()
        };
        [
            pick(self.line.requests()),
            pick(self.x.server.state.requests()),
            pick(self.facebook.requests()),
        ]
    }

    /// The text of every post each platform accepted, per platform of [`PLATFORMS`]: an
    /// arrival that the platform refused is not a delivery.
    pub fn accepted(&self) -> [Vec<String>; 3] {
        let endpoint = match self.line_mode {
            LineMode::Broadcast => "broadcast",
            LineMode::Multicast => "multicast",
        };
        [
            self.line
                .accepted_to(endpoint)
                .into_iter()
                .map(|a| a.body.to_string())
                .collect(),
            self.x.x.posts().into_iter().map(|p| p.text).collect(),
            self.facebook
                .posts()
                .into_iter()
                .map(|p| p.message)
                .collect(),
        ]
    }
}
