//! CSV output (RFC 4180): fields quoted when they hold a comma, a quote or a line break,
//! quotes doubled; lines end with CRLF.

/// `field` as one CSV field.
#[must_use]
pub fn csv_field(field: &str) -> String {
    // A spreadsheet would run a cell that starts like a formula: such text gets a leading
    // apostrophe (OWASP's CSV-injection advice). Negative numbers stay numbers.
    let formula = match field.as_bytes() {
        [b'=' | b'+' | b'@' | b'\t' | b'\r', ..] => true,
        [b'-', next, ..] => !next.is_ascii_digit(),
        _ => false,
    };
    let owned;
    let field = if formula {
        owned = format!("'{field}");
        owned.as_str()
    } else {
        field
    };
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_owned()
    }
}

/// One CSV line of `fields`, CRLF-terminated.
pub(super) fn csv_line<I, S>(fields: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut line = fields
        .into_iter()
        .map(|f| csv_field(f.as_ref()))
        .collect::<Vec<_>>()
        .join(",");
    line.push_str("\r\n");
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_quoted_only_when_needed() {
        assert_eq!(csv_field("m1"), "m1");
        assert_eq!(csv_field("0-50 kWh"), "0-50 kWh");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
        assert_eq!(csv_line(["a", "b,c"]), "a,\"b,c\"\r\n");
    }
}

#[cfg(test)]
mod formula_tests {
    use super::csv_field;

    #[test]
    fn cells_that_would_run_as_formulas_are_neutralised() {
        assert_eq!(csv_field("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(csv_field("+1"), "'+1");
        assert_eq!(csv_field("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(csv_field("-cmd"), "'-cmd");
        assert_eq!(csv_field("-12.5"), "-12.5");
        assert_eq!(csv_field("home-1"), "home-1");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
    }
}
