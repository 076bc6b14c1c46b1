//! The CAP 1.2 message model: one struct per complex type of `cap12.xsd`, one enum per
//! enumerated simple type. Field order follows the schema's sequences, which is also the
//! order [`crate::to_xml`] writes them in.

use std::fmt;

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveTime, TimeZone};

/// Declares a CAP enumeration: the variants, their exact CAP spelling, and the helpers.
macro_rules! cap_enum {
    (
        $(#[$meta:meta])*
        $name:ident, $element:literal {
            $( $(#[$vmeta:meta])* $variant:ident => $text:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
        pub enum $name {
            $( $(#[$vmeta])* #[cfg_attr(feature = "serde", serde(rename = $text))] $variant ),+
        }

        impl $name {
            /// Every value, in the schema's order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The exact spelling used in CAP documents.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            /// The value spelled exactly `text` (CAP values are case-sensitive and are not
            /// trimmed: the schema compares them literally).
            pub fn from_cap_str(text: &str) -> Option<Self> {
                match text {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl CapEnum for $name {
            const ELEMENT: &'static str = $element;
            fn from_cap_str(text: &str) -> Option<Self> {
                $name::from_cap_str(text)
            }
            fn all_spellings() -> String {
                Self::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(", ")
            }
        }
    };
}

/// What the parser needs from every enumeration, to read it and to explain a bad value.
pub(crate) trait CapEnum: Sized {
    /// The element that carries it, for messages.
    const ELEMENT: &'static str;
    fn from_cap_str(text: &str) -> Option<Self>;
    fn all_spellings() -> String;
}

cap_enum! {
    /// `alert/status`: who the message is for.
    Status, "status" {
        /// Actionable by all targeted recipients.
        Actual => "Actual",
        /// Actionable only by designated exercise participants.
        Exercise => "Exercise",
        /// For messages that support alert network internal functions.
        System => "System",
        /// Technical testing only; all recipients disregard it.
        Test => "Test",
        /// A preliminary template or draft, not actionable in its current form.
        Draft => "Draft",
    }
}

cap_enum! {
    /// `alert/msgType`: what the message does.
    MsgType, "msgType" {
        /// Initial information requiring attention by targeted recipients.
        Alert => "Alert",
        /// Updates and supersedes the messages named in `references`.
        Update => "Update",
        /// Cancels the messages named in `references`.
        Cancel => "Cancel",
        /// Acknowledges receipt of the messages named in `references`.
        Ack => "Ack",
        /// Rejects the messages named in `references`.
        Error => "Error",
    }
}

cap_enum! {
    /// `alert/scope`: who may see the message.
    Scope, "scope" {
        /// For general dissemination to unrestricted audiences.
        Public => "Public",
        /// For users with a known operational requirement (see `restriction`).
        Restricted => "Restricted",
        /// For specified addresses only (see `addresses`).
        Private => "Private",
    }
}

cap_enum! {
    /// `info/category`: the kind of event.
    Category, "category" {
        /// Geophysical (including landslide).
        Geo => "Geo",
        /// Meteorological (including flood).
        Met => "Met",
        /// General emergency and public safety.
        Safety => "Safety",
        /// Law enforcement, military, homeland and local/private security.
        Security => "Security",
        /// Rescue and recovery.
        Rescue => "Rescue",
        /// Fire suppression and rescue.
        Fire => "Fire",
        /// Medical and public health.
        Health => "Health",
        /// Pollution and other environmental.
        Env => "Env",
        /// Public and private transportation.
        Transport => "Transport",
        /// Utility, telecommunication, other non-transport infrastructure.
        Infra => "Infra",
        /// Chemical, biological, radiological, nuclear or high-yield explosive.
        Cbrne => "CBRNE",
        /// Other events.
        Other => "Other",
    }
}

cap_enum! {
    /// `info/responseType`: the action recommended to the audience.
    ResponseType, "responseType" {
        /// Take shelter in place.
        Shelter => "Shelter",
        /// Relocate as instructed.
        Evacuate => "Evacuate",
        /// Make preparations.
        Prepare => "Prepare",
        /// Execute a pre-planned activity.
        Execute => "Execute",
        /// Avoid the subject event.
        Avoid => "Avoid",
        /// Attend to information sources.
        Monitor => "Monitor",
        /// Evaluate the information in this message (not for public warnings).
        Assess => "Assess",
        /// The subject event no longer poses a threat.
        AllClear => "AllClear",
        /// No action recommended.
        None => "None",
    }
}

cap_enum! {
    /// `info/urgency`: how soon to act.
    Urgency, "urgency" {
        /// Responsive action should be taken immediately.
        Immediate => "Immediate",
        /// Within the next hour.
        Expected => "Expected",
        /// In the near future.
        Future => "Future",
        /// No longer required.
        Past => "Past",
        /// Not known.
        Unknown => "Unknown",
    }
}

cap_enum! {
    /// `info/severity`: how bad.
    Severity, "severity" {
        /// Extraordinary threat to life or property.
        Extreme => "Extreme",
        /// Significant threat to life or property.
        Severe => "Severe",
        /// Possible threat to life or property.
        Moderate => "Moderate",
        /// Minimal to no known threat to life or property.
        Minor => "Minor",
        /// Not known.
        Unknown => "Unknown",
    }
}

cap_enum! {
    /// `info/certainty`: how likely.
    Certainty, "certainty" {
        /// Determined to have occurred or to be ongoing.
        Observed => "Observed",
        /// Likely (p > ~50%).
        Likely => "Likely",
        /// Possible but not likely (p <= ~50%).
        Possible => "Possible",
        /// Not expected to occur (p ~ 0).
        Unlikely => "Unlikely",
        /// Not known.
        Unknown => "Unknown",
    }
}

/// A CAP date-time (`sent`, `effective`, `onset`, `expires`, and the third part of a
/// reference): the text exactly as written, and its value.
///
/// The text always has the schema's form `YYYY-MM-DDThh:mm:ss±hh:mm`: no `Z`, no fractions
/// of a second. CAP writes UTC as `-00:00`. Two values are equal only if their texts are.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CapDateTime {
    text: String,
    value: DateTime<FixedOffset>,
}

impl CapDateTime {
    /// Reads a CAP date-time; `None` unless `text` has exactly the schema's form and names a
    /// real instant (month 01–12, a day that exists, hour 00–23 or the end-of-day
    /// `24:00:00` that XML Schema allows, offset at most ±14:00).
    pub fn parse(text: &str) -> Option<Self> {
        parse_date_time(text).ok()
    }

    /// The CAP form of `value`, truncated to whole seconds; UTC is written `-00:00`.
    /// `None` if the year is outside 0001–9999 or the offset beyond ±14:00, which CAP cannot
    /// express.
    pub fn from_datetime(value: DateTime<FixedOffset>) -> Option<Self> {
        let mut text = value.format("%Y-%m-%dT%H:%M:%S%:z").to_string();
        if text.ends_with("+00:00") {
            text.replace_range(text.len() - 6.., "-00:00");
        }
        Self::parse(&text)
    }

    /// The text as written in the document.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The instant, with the offset it was written in.
    pub fn value(&self) -> DateTime<FixedOffset> {
        self.value
    }
}

impl fmt::Display for CapDateTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for CapDateTime {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for CapDateTime {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <String as serde::Deserialize>::deserialize(deserializer)?;
        parse_date_time(&text).map_err(serde::de::Error::custom)
    }
}

/// Reads a CAP date-time, or says in a sentence why it is not one.
///
/// The schema restricts `xs:dateTime` by the pattern
/// `\d\d\d\d-\d\d-\d\dT\d\d:\d\d:\d\d[-,+]\d\d:\d\d`; the `,` that the pattern lets through
/// is still refused by `xs:dateTime` itself, as is any impossible date or time.
pub(crate) fn parse_date_time(text: &str) -> Result<CapDateTime, String> {
    const FORM: &str = "write `YYYY-MM-DDThh:mm:ss±hh:mm`, for example \
                        `2026-11-23T15:00:00+09:00` (no `Z` and no fractions of a second; \
                        UTC is written `-00:00`)";
    let b = text.as_bytes();
    let shape_ok = b.len() == 25
        && b.iter().enumerate().all(|(i, &c)| match i {
            4 | 7 => c == b'-',
            10 => c == b'T',
            13 | 16 | 22 => c == b':',
            19 => c == b'+' || c == b'-',
            _ => c.is_ascii_digit(),
        });
    if !shape_ok {
        let hint = if text.ends_with('Z') || text.ends_with('z') {
            " (`Z` is not allowed)"
        } else if text.len() > 19 && text.as_bytes().get(19) == Some(&b'.') {
            " (fractions of a second are not allowed)"
        } else {
            ""
        };
        return Err(format!(
            "`{}` is not a CAP date-time{hint}: {FORM}",
            shorten(text)
        ));
    }
    // Every byte is an ASCII digit where these are read, so parsing cannot fail.
    let num = |range: std::ops::Range<usize>| -> u32 {
        text[range]
            .bytes()
            .fold(0, |n, d| n * 10 + u32::from(d - b'0'))
    };
    let (year, month, day) = (num(0..4), num(5..7), num(8..10));
    let (hour, minute, second) = (num(11..13), num(14..16), num(17..19));
    let (off_h, off_m) = (num(20..22), num(23..25));
    let impossible = || format!("`{text}` is not a real date and time: {FORM}");
    // XML Schema 1.0 has no year 0000.
    if year == 0 {
        return Err(impossible());
    }
    let mut date = NaiveDate::from_ymd_opt(year as i32, month, day).ok_or_else(impossible)?;
    // XML Schema 1.0 (second edition) allows 24:00:00, meaning 00:00:00 of the next day.
    let time = if (hour, minute, second) == (24, 0, 0) {
        date = date.succ_opt().ok_or_else(impossible)?;
        NaiveTime::MIN
    } else {
        NaiveTime::from_hms_opt(hour, minute, second).ok_or_else(impossible)?
    };
    // xs:dateTime allows offsets from -14:00 to +14:00.
    if off_m > 59 || off_h > 14 || (off_h == 14 && off_m != 0) {
        return Err(format!(
            "`{text}` has a time-zone offset beyond ±14:00: {FORM}"
        ));
    }
    let seconds = (off_h * 3600 + off_m * 60) as i32;
    let seconds = if b[19] == b'-' { -seconds } else { seconds };
    let offset = FixedOffset::east_opt(seconds).ok_or_else(impossible)?;
    let value = offset
        .from_local_datetime(&date.and_time(time))
        .single()
        .ok_or_else(impossible)?;
    Ok(CapDateTime {
        text: text.to_owned(),
        value,
    })
}

/// A quoted value in a message, cut short so one absurd value cannot flood a log line.
pub(crate) fn shorten(text: &str) -> String {
    const MAX: usize = 80;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// One earlier message named in `references`: written `sender,identifier,sent`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Reference {
    /// The earlier message's `sender`.
    pub sender: String,
    /// The earlier message's `identifier`.
    pub identifier: String,
    /// The earlier message's `sent`.
    pub sent: CapDateTime,
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{},{},{}", self.sender, self.identifier, self.sent)
    }
}

/// A WGS 84 point in decimal degrees.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Point {
    /// Latitude, -90 to 90.
    pub lat: f64,
    /// Longitude, -180 to 180.
    pub lon: f64,
}

impl fmt::Display for Point {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Rust prints the shortest text that reads back as the same f64, never in
        // exponent form, so this is always a valid decimal that round-trips exactly.
        write!(f, "{},{}", self.lat, self.lon)
    }
}

/// `area/polygon`: a closed ring of at least four points whose first and last are equal.
#[derive(Debug, Clone, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Polygon {
    /// The points in order; the last repeats the first.
    pub points: Vec<Point>,
}

impl fmt::Display for Polygon {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, point) in self.points.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{point}")?;
        }
        Ok(())
    }
}

/// `area/circle`: written `lat,lon radius` with the radius in kilometres.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Circle {
    /// The centre.
    pub center: Point,
    /// The radius in kilometres (0 for a point).
    pub radius_km: f64,
}

impl fmt::Display for Circle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.center, self.radius_km)
    }
}

/// `info/resource`: a file with more information (an image, a map, a PDF).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Resource {
    /// `resourceDesc` (required): what the file is.
    pub resource_desc: String,
    /// `mimeType` (required).
    pub mime_type: String,
    /// `size`, in bytes.
    pub size: Option<u64>,
    /// `uri`: where to get it.
    pub uri: Option<String>,
    /// `derefUri`: the file itself, base64-encoded; kept as written and never decoded here.
    pub deref_uri: Option<String>,
    /// `digest`: SHA-1 of the file, hex.
    pub digest: Option<String>,
}

/// `info/area`: where.
#[derive(Debug, Clone, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Area {
    /// `areaDesc` (required): the area in words.
    pub area_desc: String,
    /// `polygon`s.
    pub polygons: Vec<Polygon>,
    /// `circle`s.
    pub circles: Vec<Circle>,
    /// `geocode`s as `(valueName, value)`, e.g. `("JIS X 0402", "202070")`.
    pub geocodes: Vec<(String, String)>,
    /// `altitude`, in feet above mean sea level (or the floor of a range with `ceiling`).
    pub altitude: Option<f64>,
    /// `ceiling`, in feet above mean sea level; only together with `altitude`.
    pub ceiling: Option<f64>,
}

/// `alert/info`: the message in one language.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Info {
    /// `language` (RFC 3066 code); `en-US` when the document has none.
    pub language: String,
    /// `category` (at least one).
    pub categories: Vec<Category>,
    /// `event` (required): the event in words, e.g. `避難指示`.
    pub event: String,
    /// `responseType`s.
    pub response_types: Vec<ResponseType>,
    /// `urgency` (required).
    pub urgency: Urgency,
    /// `severity` (required).
    pub severity: Severity,
    /// `certainty` (required).
    pub certainty: Certainty,
    /// `audience`.
    pub audience: Option<String>,
    /// `eventCode`s as `(valueName, value)`.
    pub event_codes: Vec<(String, String)>,
    /// `effective`.
    pub effective: Option<CapDateTime>,
    /// `onset`.
    pub onset: Option<CapDateTime>,
    /// `expires`.
    pub expires: Option<CapDateTime>,
    /// `senderName`.
    pub sender_name: Option<String>,
    /// `headline`.
    pub headline: Option<String>,
    /// `description`.
    pub description: Option<String>,
    /// `instruction`.
    pub instruction: Option<String>,
    /// `web` (a URI, whitespace-collapsed as `xs:anyURI` is).
    pub web: Option<String>,
    /// `contact`.
    pub contact: Option<String>,
    /// `parameter`s as `(valueName, value)`.
    pub parameters: Vec<(String, String)>,
    /// `resource`s.
    pub resources: Vec<Resource>,
    /// `area`s.
    pub areas: Vec<Area>,
}

impl Default for Info {
    /// An English info with every optional part empty and urgency, severity and certainty
    /// `Unknown`. It has no category yet, so it is not valid until one is added.
    fn default() -> Self {
        Info {
            language: DEFAULT_LANGUAGE.to_owned(),
            categories: Vec::new(),
            event: String::new(),
            response_types: Vec::new(),
            urgency: Urgency::Unknown,
            severity: Severity::Unknown,
            certainty: Certainty::Unknown,
            audience: None,
            event_codes: Vec::new(),
            effective: None,
            onset: None,
            expires: None,
            sender_name: None,
            headline: None,
            description: None,
            instruction: None,
            web: None,
            contact: None,
            parameters: Vec::new(),
            resources: Vec::new(),
            areas: Vec::new(),
        }
    }
}

/// The schema's default for `info/language`.
pub(crate) const DEFAULT_LANGUAGE: &str = "en-US";

/// A CAP 1.2 alert message (`alert`).
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Alert {
    /// `identifier`: unique for this sender; no whitespace, `,`, `<` or `&`.
    pub identifier: String,
    /// `sender`: globally unique sender id; no whitespace, `,`, `<` or `&`.
    pub sender: String,
    /// `sent`.
    pub sent: CapDateTime,
    /// `status`.
    pub status: Status,
    /// `msgType`.
    pub msg_type: MsgType,
    /// `source`.
    pub source: Option<String>,
    /// `scope`.
    pub scope: Scope,
    /// `restriction` (required, non-blank, when `scope` is `Restricted`).
    pub restriction: Option<String>,
    /// `addresses`: space-separated, addresses containing spaces in double quotes
    /// (required, non-blank, when `scope` is `Private`). Kept as written.
    pub addresses: Option<String>,
    /// `code`s.
    pub codes: Vec<String>,
    /// `note`.
    pub note: Option<String>,
    /// `references`: the earlier messages this one refers to. Required for `Update`,
    /// `Cancel`, `Ack` and `Error`. An absent and an empty `references` both read as empty.
    pub references: Vec<Reference>,
    /// `incidents`: space-separated, kept as written.
    pub incidents: Option<String>,
    /// `info`s, usually one per language.
    pub infos: Vec<Info>,
}
