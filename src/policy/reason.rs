//! Why a query was blocked, in words: the Extended DNS Error text (RFC 8914) of a block.

/// The Extended DNS Error text of a block: `blocked by list L (category a, b)`.
pub fn blocked_text<'a>(list: Option<&str>, categories: impl Iterator<Item = &'a str>) -> String {
    let mut text = String::with_capacity(64);
    text.push_str("blocked");
    if let Some(list) = list {
        text.push_str(" by list ");
        text.push_str(list);
    }
    let mut first = true;
    for c in categories {
        text.push_str(if first { " (category " } else { ", " });
        text.push_str(c);
        first = false;
    }
    if !first {
        text.push(')');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocked_text_names_list_and_categories() {
        assert_eq!(
            blocked_text(Some("xiaomi"), ["telemetry", "xiaomi"].into_iter()),
            "blocked by list xiaomi (category telemetry, xiaomi)"
        );
        assert_eq!(blocked_text(None, std::iter::empty()), "blocked");
    }
}
