//! The CAP 1.2 rules that `cap12.xsd` does not express, as small pure functions. Each
//! returns the model value or a sentence saying what is wrong; the schema pass
//! (`schema.rs`) decides which element the sentence is about.

use crate::model::{parse_date_time, shorten, Circle, Point, Polygon, Reference};

/// `identifier`, `sender` and the first two parts of a reference: not empty, and none of
/// the characters CAP reserves (white space separates references, commas separate their
/// parts, `<` and `&` are the XML special characters).
pub(crate) fn check_id(what: &str, value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("`{what}` must not be empty"));
    }
    let bad = value
        .chars()
        .find(|&c| c.is_whitespace() || matches!(c, ',' | '<' | '&'));
    match bad {
        None => Ok(()),
        Some(c) => {
            let name = match c {
                ',' => "a comma".to_owned(),
                '<' => "`<`".to_owned(),
                '&' => "`&`".to_owned(),
                ' ' => "a space".to_owned(),
                c => format!("the white-space character U+{:04X}", u32::from(c)),
            };
            Err(format!(
                "`{what}` \"{}\" contains {name}; CAP does not allow white space, commas, \
                 `<` or `&` in it",
                shorten(value)
            ))
        }
    }
}

/// XML white space, which separates list items in CAP.
fn is_xml_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

fn items(text: &str) -> impl Iterator<Item = &str> {
    text.split(is_xml_space).filter(|item| !item.is_empty())
}

/// `references`: white-space separated `sender,identifier,sent` triples.
pub(crate) fn parse_references(text: &str) -> Result<Vec<Reference>, String> {
    items(text)
        .map(|item| {
            let triple = || {
                format!(
                    "`{}` is not a reference; write each earlier message as \
                     `sender,identifier,sent`, separated by spaces",
                    shorten(item)
                )
            };
            let mut parts = item.split(',');
            let (Some(sender), Some(identifier), Some(sent), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err(triple());
            };
            if sender.is_empty() || identifier.is_empty() {
                return Err(triple());
            }
            check_id("sender", sender)
                .map_err(|e| format!("in reference `{}`: {e}", shorten(item)))?;
            check_id("identifier", identifier)
                .map_err(|e| format!("in reference `{}`: {e}", shorten(item)))?;
            let sent = parse_date_time(sent)
                .map_err(|e| format!("in reference `{}`, the sent time: {e}", shorten(item)))?;
            Ok(Reference {
                sender: sender.to_owned(),
                identifier: identifier.to_owned(),
                sent,
            })
        })
        .collect()
}

/// `xs:decimal`'s lexical form: an optional sign, digits, an optional fraction; no
/// exponent, no `inf` or `NaN` (which Rust's own float parser would accept).
pub(crate) fn is_decimal(text: &str) -> bool {
    let unsigned = text.strip_prefix(['+', '-']).unwrap_or(text);
    let (whole, fraction) = match unsigned.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (unsigned, None),
    };
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    digits(whole)
        && fraction.is_none_or(digits)
        && (!whole.is_empty() || fraction.is_some_and(|f| !f.is_empty()))
}

/// A decimal number that fits an `f64`.
pub(crate) fn decimal(text: &str) -> Option<f64> {
    if !is_decimal(text) {
        return None;
    }
    text.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// `latitude,longitude` in WGS 84 decimal degrees.
fn parse_point(item: &str) -> Result<Point, String> {
    let pair = item
        .split_once(',')
        .and_then(|(lat, lon)| Some((decimal(lat)?, decimal(lon)?)));
    let Some((lat, lon)) = pair else {
        return Err(format!(
            "`{}` is not a point; write `latitude,longitude` in decimal degrees, e.g. \
             `36.6230,138.3000`",
            shorten(item)
        ));
    };
    if !(-90.0..=90.0).contains(&lat) {
        return Err(format!("latitude {lat} is out of range (-90 to 90)"));
    }
    if !(-180.0..=180.0).contains(&lon) {
        return Err(format!("longitude {lon} is out of range (-180 to 180)"));
    }
    Ok(Point { lat, lon })
}

/// `polygon`: at least four white-space separated points, the first repeated as the last.
pub(crate) fn parse_polygon(text: &str) -> Result<Polygon, String> {
    let points = items(text)
        .map(parse_point)
        .collect::<Result<Vec<_>, _>>()?;
    if points.len() < 4 {
        return Err(format!(
            "a polygon needs at least 4 points, the first repeated as the last to close \
             it; this one has {}",
            points.len()
        ));
    }
    let (first, last) = (points[0], points[points.len() - 1]);
    if first != last {
        return Err(format!(
            "a polygon must be closed: its last point ({last}) must repeat its first \
             ({first})"
        ));
    }
    Ok(Polygon { points })
}

/// `circle`: `latitude,longitude radius` with the radius in kilometres.
pub(crate) fn parse_circle(text: &str) -> Result<Circle, String> {
    let form = || {
        format!(
            "`{}` is not a circle; write `latitude,longitude radius` with the radius in \
             kilometres, e.g. `36.65,138.31 5`",
            shorten(text.trim())
        )
    };
    let mut parts = items(text);
    let (Some(center), Some(radius), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(form());
    };
    let center = parse_point(center)?;
    let radius_km = decimal(radius).ok_or_else(form)?;
    if radius_km < 0.0 {
        return Err(format!(
            "a circle's radius cannot be negative ({radius} km)"
        ));
    }
    Ok(Circle { center, radius_km })
}
