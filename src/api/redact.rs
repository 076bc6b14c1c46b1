//! Recipient addresses in platform texts (an SMTP refusal quotes the address it refused)
//! are personal data: only admins see them; everyone else sees `[address]`.

use super::auth::{Caller, Role};

/// `text` with every email address replaced by `[address]`.
pub fn addresses(text: &str) -> String {
    let is_local = |c: char| c.is_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.\"".contains(c);
    let is_domain = |c: char| c.is_alphanumeric() || c == '-' || c == '.';
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut start_of_copy = 0;
    while i < chars.len() {
        if chars[i] == '@' {
            let mut a = i;
            while a > 0 && is_local(chars[a - 1]) {
                a -= 1;
            }
            let mut b = i + 1;
            while b < chars.len() && is_domain(chars[b]) {
                b += 1;
            }
            // A domain with a dot after something, and a local part: an address.
            let domain: String = chars[i + 1..b].iter().collect();
            let domain = domain.trim_end_matches('.');
            if a < i && domain.contains('.') && !domain.starts_with('.') {
                out.extend(&chars[start_of_copy..a]);
                out.push_str("[address]");
                let end = i + 1 + domain.chars().count();
                start_of_copy = end;
                i = end;
                continue;
            }
        }
        i += 1;
    }
    out.extend(&chars[start_of_copy.min(chars.len())..]);
    out
}

/// The text as `caller` may see it.
pub fn for_caller(caller: &Caller, text: Option<String>) -> Option<String> {
    if caller.role >= Role::Admin {
        text
    } else {
        text.map(|t| addresses(&t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_hidden_and_the_rest_kept() {
        assert_eq!(
            addresses("550 5.1.1 <taro.yamada@docomo.ne.jp>: Recipient address rejected"),
            "550 5.1.1 <[address]>: Recipient address rejected"
        );
        assert_eq!(
            addresses("\"taro..y.\"@ezweb.ne.jp and hanako+news@例え.jp."),
            "[address] and [address]."
        );
        assert_eq!(
            addresses("HTTP 429 @ 12:00, user@localhost"),
            "HTTP 429 @ 12:00, user@localhost"
        );
        assert_eq!(addresses("配信失敗: 宛先不明"), "配信失敗: 宛先不明");
    }
}
