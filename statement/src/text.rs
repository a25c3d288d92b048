//! Text for the PDF's standard fonts: WinAnsi encoding, Helvetica glyph widths, and the
//! number formats the statement prints (rupees with Indian digit grouping, kWh from whole Wh).
//!
//! The statement uses the standard Type 1 fonts Helvetica and Helvetica-Bold, which every
//! PDF reader has, so nothing is embedded. Their encoding is WinAnsi (Windows-1252), which
//! has no rupee sign (U+20B9) and no Greek: amounts are written `Rs. 1,234.56` and ε is
//! written `epsilon`. Any other character outside WinAnsi becomes `?`.

/// The two fonts a statement uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Font {
    /// Helvetica.
    Regular,
    /// Helvetica-Bold.
    Bold,
}

/// Helvetica advance widths (1/1000 em) of the printable ASCII characters 0x20..=0x7E, from
/// Adobe's AFM file.
const HELVETICA: [u16; 95] = [
    278, 278, 355, 556, 556, 889, 667, 191, 333, 333, 389, 584, 278, 333, 278, 278, // ' '../
    556, 556, 556, 556, 556, 556, 556, 556, 556, 556, 278, 278, 584, 584, 584, 556, // 0..?
    1015, 667, 667, 722, 722, 667, 611, 778, 722, 278, 500, 667, 556, 833, 722, 778, // @..O
    667, 778, 722, 667, 611, 722, 667, 944, 667, 667, 611, 278, 278, 278, 469, 556, // P.._
    333, 556, 556, 500, 556, 556, 278, 556, 556, 222, 222, 500, 222, 833, 556, 556, // `..o
    556, 556, 333, 500, 278, 556, 500, 722, 500, 500, 500, 334, 260, 334, 584, // p..~
];

/// Helvetica-Bold advance widths (1/1000 em) of 0x20..=0x7E, from Adobe's AFM file.
const HELVETICA_BOLD: [u16; 95] = [
    278, 333, 474, 556, 556, 889, 722, 238, 333, 333, 389, 584, 278, 333, 278, 278, // ' '../
    556, 556, 556, 556, 556, 556, 556, 556, 556, 556, 333, 333, 584, 584, 584, 611, // 0..?
    975, 722, 722, 722, 722, 667, 611, 778, 722, 278, 556, 722, 611, 833, 722, 778, // @..O
    667, 778, 722, 667, 611, 722, 667, 944, 667, 667, 611, 333, 278, 333, 584, 556, // P.._
    333, 556, 611, 556, 611, 556, 333, 611, 611, 278, 278, 556, 278, 889, 611, 611, // `..o
    611, 611, 389, 556, 333, 611, 556, 778, 556, 556, 500, 389, 280, 389, 584, // p..~
];

/// Width used for characters outside printable ASCII (a typical Latin glyph).
const OTHER_WIDTH: u16 = 556;

/// `text` in WinAnsi (Windows-1252) bytes: ASCII and Latin-1 as they are, the typographic
/// characters of 0x80..0x9F at their codes, `₹` as `Rs.`, `ε` as `epsilon`, control
/// characters as spaces and anything else as `?`.
pub(crate) fn win_ansi(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    for c in text.chars() {
        match c {
            ' '..='~' | '\u{A0}'..='\u{FF}' => {
                // Both ranges are one byte in Windows-1252 with the same code point.
                out.push(u8::try_from(u32::from(c)).unwrap_or(b'?'));
            }
            '₹' => out.extend_from_slice(b"Rs."),
            'ε' => out.extend_from_slice(b"epsilon"),
            c if c.is_control() => out.push(b' '),
            c => out.push(cp1252_special(c).unwrap_or(b'?')),
        }
    }
    out
}

/// The Windows-1252 code of the characters it places in 0x80..=0x9F.
fn cp1252_special(c: char) -> Option<u8> {
    Some(match c {
        '€' => 0x80,
        '‚' => 0x82,
        'ƒ' => 0x83,
        '„' => 0x84,
        '…' => 0x85,
        '†' => 0x86,
        '‡' => 0x87,
        'ˆ' => 0x88,
        '‰' => 0x89,
        'Š' => 0x8A,
        '‹' => 0x8B,
        'Œ' => 0x8C,
        'Ž' => 0x8E,
        '‘' => 0x91,
        '’' => 0x92,
        '“' => 0x93,
        '”' => 0x94,
        '•' => 0x95,
        '–' => 0x96,
        '—' => 0x97,
        '˜' => 0x98,
        '™' => 0x99,
        'š' => 0x9A,
        '›' => 0x9B,
        'œ' => 0x9C,
        'ž' => 0x9E,
        'Ÿ' => 0x9F,
        _ => return None,
    })
}

/// The width in points of WinAnsi `bytes` set in `font` at `size` points.
pub(crate) fn width(bytes: &[u8], font: Font, size: f32) -> f32 {
    let table = match font {
        Font::Regular => &HELVETICA,
        Font::Bold => &HELVETICA_BOLD,
    };
    let units: u32 = bytes
        .iter()
        .map(|&b| {
            b.checked_sub(0x20)
                .and_then(|i| table.get(usize::from(i)))
                .copied()
                .unwrap_or(OTHER_WIDTH)
        })
        .map(u32::from)
        .sum();
    units as f32 * size / 1000.0
}

/// `paise` as rupees with two decimals and Indian digit grouping (lakh and crore): `123456`
/// paise is `1,234.56`, `1234567890` paise is `1,23,45,678.90`; negative amounts start with
/// `-`. No currency sign: the statement writes `Rs.` before it.
pub fn format_amount(paise: i64) -> String {
    let sign = if paise < 0 { "-" } else { "" };
    let abs = paise.unsigned_abs();
    format!("{sign}{}.{:02}", group_indian(abs / 100), abs % 100)
}

/// `wh` whole watt-hours as kilowatt-hours with exactly three decimals and no grouping:
/// `12345` Wh is `12.345`. Exact: no floating point is involved.
pub fn format_kwh(wh: u64) -> String {
    format!("{}.{:03}", wh / 1000, wh % 1000)
}

/// `n` with Indian grouping: the last three digits, then groups of two.
fn group_indian(n: u64) -> String {
    let digits = n.to_string();
    if digits.len() <= 3 {
        return digits;
    }
    let (head, last3) = digits.split_at(digits.len() - 3);
    let mut groups = Vec::new();
    let mut rest = head;
    while rest.len() > 2 {
        let (h, g) = rest.split_at(rest.len() - 2);
        groups.push(g);
        rest = h;
    }
    let mut out = String::from(rest);
    for g in groups.iter().rev() {
        out.push(',');
        out.push_str(g);
    }
    out.push(',');
    out.push_str(last3);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_use_indian_grouping() {
        assert_eq!(format_amount(0), "0.00");
        assert_eq!(format_amount(5), "0.05");
        assert_eq!(format_amount(99_999), "999.99");
        assert_eq!(format_amount(123_456), "1,234.56");
        assert_eq!(format_amount(12_345_678), "1,23,456.78");
        assert_eq!(format_amount(1_234_567_890), "1,23,45,678.90");
        assert_eq!(format_amount(-150_900), "-1,509.00");
        assert_eq!(format_amount(i64::MIN), "-92,23,37,20,36,85,47,758.08");
    }

    #[test]
    fn kwh_is_exact_from_wh() {
        assert_eq!(format_kwh(0), "0.000");
        assert_eq!(format_kwh(7), "0.007");
        assert_eq!(format_kwh(12_345), "12.345");
        assert_eq!(format_kwh(1_000_000), "1000.000");
    }

    #[test]
    fn win_ansi_maps_what_it_can() {
        assert_eq!(win_ansi("Meter m-1"), b"Meter m-1");
        assert_eq!(win_ansi("₹5"), b"Rs.5");
        assert_eq!(win_ansi("ε = 1"), b"epsilon = 1");
        assert_eq!(win_ansi("café – ok"), b"caf\xE9 \x96 ok");
        assert_eq!(win_ansi("a\nb"), b"a b");
        assert_eq!(win_ansi("日"), b"?");
    }

    #[test]
    fn widths_follow_the_afm_tables() {
        // Digits are 556 units in both fonts; "Rs." is 722 + 500 + 278 in Helvetica.
        assert!((width(b"10", Font::Regular, 10.0) - 11.12).abs() < 1e-4);
        assert!((width(b"Rs.", Font::Regular, 1.0) - 1.5).abs() < 1e-6);
        assert!((width(b"b", Font::Bold, 1.0) - 0.611).abs() < 1e-6);
        assert!((width(&[0xE9], Font::Regular, 1.0) - 0.556).abs() < 1e-6);
    }
}
