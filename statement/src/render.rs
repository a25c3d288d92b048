//! Laying a [`Statement`] out on A4 pages with `pdf-writer`.
//!
//! A small flow layout: sections are placed top to bottom and a section that does not fit
//! starts a new page; each page gets a footer (`page N of M`) once the page count is known.
//! Text is drawn as text objects (`BT … Tj … ET`) in Helvetica / Helvetica-Bold with
//! WinAnsiEncoding, one run per label or number, so text extraction returns each figure
//! whole. The chart is filled rectangles and stroked lines.

use chrono::{DateTime, Datelike, Utc};
use pdf_writer::{Content, Finish, Name, Pdf, Rect, Ref, Str, TextStr};
use seer_core::parse_day;

use crate::text::{Font, format_amount, format_kwh, width, win_ansi};
use crate::{Statement, StatementError};

/// A4 width in points.
const PAGE_WIDTH: f32 = 595.28;
/// A4 height in points.
const PAGE_HEIGHT: f32 = 841.89;
/// Left and right margin.
const MARGIN: f32 = 50.0;
/// Top margin.
const TOP: f32 = PAGE_HEIGHT - 56.0;
/// The lowest baseline body text may use (the footer sits below it).
const BOTTOM: f32 = 64.0;
/// The most daily values a statement draws (a month's days).
const MAX_DAYS: usize = 31;
/// Height of the chart's plot area.
const CHART_HEIGHT: f32 = 150.0;

/// Resource name of Helvetica.
const REGULAR: Name<'static> = Name(b"F1");
/// Resource name of Helvetica-Bold.
const BOLD: Name<'static> = Name(b"F2");

/// Renders `statement` as a PDF (A4, one page, or two when the release list is long).
///
/// # Errors
/// [`StatementError`] when the daily usage or privacy figures are not valid (negative or
/// non-finite values, days that are not dates of the statement's month, more than 31 days).
pub fn render_pdf(statement: &Statement) -> Result<Vec<u8>, StatementError> {
    let days = check(statement)?;
    let mut doc = Layout::new();
    header(&mut doc, statement);
    usage_table(&mut doc, statement);
    amount(&mut doc, statement);
    chart(&mut doc, statement, &days);
    privacy(&mut doc, statement);
    Ok(doc.finish(statement))
}

/// The x-axis label of each day (its day of month), after checking every input figure.
fn check(statement: &Statement) -> Result<Vec<String>, StatementError> {
    if statement.daily_kwh.len() > MAX_DAYS {
        return Err(StatementError::TooManyDays {
            days: statement.daily_kwh.len(),
            max: MAX_DAYS,
        });
    }
    let facts = &statement.privacy;
    for value in std::iter::once(facts.epsilon_spent).chain(facts.epsilon_budget) {
        if !value.is_finite() || value < 0.0 {
            return Err(StatementError::InvalidEpsilon { value });
        }
    }
    statement
        .daily_kwh
        .iter()
        .map(|(day, kwh)| {
            let date = parse_day(day).map_err(|_| StatementError::InvalidDay {
                day: day.chars().take(32).collect(),
            })?;
            let period = statement.period;
            if date < period.first_day() || date >= period.end_day() {
                return Err(StatementError::DayOutsidePeriod {
                    day: day.clone(),
                    period,
                });
            }
            if !kwh.is_finite() || *kwh < 0.0 {
                return Err(StatementError::InvalidUsage {
                    day: day.clone(),
                    kwh: *kwh,
                });
            }
            Ok(date.day().to_string())
        })
        .collect()
}

/// Horizontal alignment of a text run.
#[derive(Clone, Copy)]
enum Align {
    /// `x` is the left edge.
    Left,
    /// `x` is the right edge.
    Right,
    /// `x` is the centre.
    Center,
}

/// The pages being written and the current baseline.
struct Layout {
    /// Finished pages.
    pages: Vec<Content>,
    /// The page being written.
    page: Content,
    /// The next free baseline on the current page.
    y: f32,
}

impl Layout {
    fn new() -> Self {
        Self {
            pages: Vec::new(),
            page: Content::new(),
            y: TOP,
        }
    }

    /// Starts a new page unless `height` points fit above the bottom margin.
    fn ensure(&mut self, height: f32) {
        if self.y - height < BOTTOM {
            let full = std::mem::replace(&mut self.page, Content::new());
            self.pages.push(full);
            self.y = TOP;
        }
    }

    /// One text run at (`x`, `y`).
    fn text(&mut self, x: f32, y: f32, font: Font, size: f32, align: Align, text: &str) {
        let bytes = win_ansi(text);
        let w = width(&bytes, font, size);
        let x = match align {
            Align::Left => x,
            Align::Right => x - w,
            Align::Center => x - w / 2.0,
        };
        let name = match font {
            Font::Regular => REGULAR,
            Font::Bold => BOLD,
        };
        self.page
            .begin_text()
            .set_font(name, size)
            .next_line(x, y)
            .show(Str(&bytes))
            .end_text();
    }

    /// A horizontal rule at `y` across the text column.
    fn rule(&mut self, y: f32, gray: f32, line_width: f32) {
        self.page
            .save_state()
            .set_stroke_gray(gray)
            .set_line_width(line_width)
            .move_to(MARGIN, y)
            .line_to(PAGE_WIDTH - MARGIN, y)
            .stroke()
            .restore_state();
    }

    /// A section heading, keeping `following` points of content with it on the page.
    fn heading(&mut self, title: &str, following: f32) {
        self.ensure(28.0 + following);
        self.y -= 22.0;
        self.text(MARGIN, self.y, Font::Bold, 13.0, Align::Left, title);
        self.y -= 6.0;
        self.rule(self.y, 0.6, 0.6);
        self.y -= 4.0;
    }

    /// Writes the document: catalog, pages with their footers, fonts, document info.
    fn finish(mut self, statement: &Statement) -> Vec<u8> {
        let last = std::mem::replace(&mut self.page, Content::new());
        self.pages.push(last);
        let count = self.pages.len();

        let mut pdf = Pdf::new();
        let catalog_id = Ref::new(1);
        let tree_id = Ref::new(2);
        let regular_id = Ref::new(3);
        let bold_id = Ref::new(4);
        let info_id = Ref::new(5);
        let first_page = 6;
        // Page i is object 6 + 2i, its content stream 7 + 2i (i < 3 in practice; i32 is ample).
        let page_ids: Vec<Ref> = (0..count)
            .map(|i| Ref::new(first_page + 2 * i32::try_from(i).unwrap_or(0)))
            .collect();

        pdf.catalog(catalog_id).pages(tree_id);
        pdf.pages(tree_id)
            .kids(page_ids.iter().copied())
            .count(i32::try_from(count).unwrap_or(i32::MAX));
        for (i, (mut content, &page_id)) in self.pages.into_iter().zip(&page_ids).enumerate() {
            footer(&mut content, statement, i + 1, count);
            let content_id = Ref::new(page_id.get() + 1);
            let mut page = pdf.page(page_id);
            page.media_box(Rect::new(0.0, 0.0, PAGE_WIDTH, PAGE_HEIGHT));
            page.parent(tree_id);
            page.contents(content_id);
            let mut resources = page.resources();
            resources
                .fonts()
                .pair(REGULAR, regular_id)
                .pair(BOLD, bold_id);
            resources.finish();
            page.finish();
            pdf.stream(content_id, &content.finish());
        }
        pdf.type1_font(regular_id)
            .base_font(Name(b"Helvetica"))
            .encoding_predefined(Name(b"WinAnsiEncoding"));
        pdf.type1_font(bold_id)
            .base_font(Name(b"Helvetica-Bold"))
            .encoding_predefined(Name(b"WinAnsiEncoding"));
        let title = format!(
            "Electricity statement {} {}",
            statement.meter_id.as_str(),
            statement.period
        );
        pdf.document_info(info_id)
            .title(TextStr(&title))
            .producer(TextStr("SEER seer-statement"));
        pdf.finish()
    }
}

/// The footer line of page `number` of `count`.
fn footer(content: &mut Content, statement: &Statement, number: usize, count: usize) {
    let text = format!(
        "SEER statement - meter {} - {} - page {number} of {count}",
        statement.meter_id.as_str(),
        statement.period
    );
    let bytes = win_ansi(&text);
    content
        .save_state()
        .set_fill_gray(0.4)
        .begin_text()
        .set_font(REGULAR, 8.0)
        .next_line(MARGIN, 36.0)
        .show(Str(&bytes))
        .end_text()
        .restore_state();
}

/// `2026-12-04 20:30 UTC`.
fn format_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// Title and the meter, month, tariff and issue date.
fn header(doc: &mut Layout, s: &Statement) {
    doc.y -= 8.0;
    doc.text(
        MARGIN,
        doc.y,
        Font::Bold,
        20.0,
        Align::Left,
        "Electricity statement",
    );
    doc.text(
        PAGE_WIDTH - MARGIN,
        doc.y,
        Font::Bold,
        12.0,
        Align::Right,
        "SEER",
    );
    doc.y -= 10.0;
    doc.rule(doc.y, 0.2, 1.2);
    let month = s.period.first_day().format("%B %Y").to_string();
    let rows = [
        (
            "Meter",
            s.meter_id.as_str().to_owned(),
            "Period",
            format!("{month} ({})", s.period),
        ),
        (
            "Tariff",
            s.tariff_name.clone(),
            "Issued",
            format_time(s.issued_at),
        ),
    ];
    let right = MARGIN + (PAGE_WIDTH - 2.0 * MARGIN) / 2.0;
    for (k1, v1, k2, v2) in rows {
        doc.y -= 18.0;
        doc.text(MARGIN, doc.y, Font::Bold, 10.0, Align::Left, k1);
        doc.text(MARGIN + 50.0, doc.y, Font::Regular, 10.0, Align::Left, &v1);
        doc.text(right, doc.y, Font::Bold, 10.0, Align::Left, k2);
        doc.text(right + 50.0, doc.y, Font::Regular, 10.0, Align::Left, &v2);
    }
    doc.y -= 6.0;
}

/// Column positions of the usage table: label (left), energy and amount (right edges).
const COL_ENERGY: f32 = 390.0;
/// Right edge of the amount column.
const COL_AMOUNT: f32 = PAGE_WIDTH - MARGIN;
/// Height of a table row.
const ROW: f32 = 16.0;

/// The usage by slab table with its total row.
fn usage_table(doc: &mut Layout, s: &Statement) {
    doc.heading("Usage by slab", 3.0 * ROW);
    let head = |doc: &mut Layout| {
        doc.y -= ROW - 2.0;
        doc.text(MARGIN, doc.y, Font::Bold, 10.0, Align::Left, "Slab");
        doc.text(
            COL_ENERGY,
            doc.y,
            Font::Bold,
            10.0,
            Align::Right,
            "Energy (kWh)",
        );
        doc.text(
            COL_AMOUNT,
            doc.y,
            Font::Bold,
            10.0,
            Align::Right,
            "Amount (Rs.)",
        );
        doc.y -= 5.0;
        doc.rule(doc.y, 0.75, 0.5);
    };
    head(doc);
    for line in &s.slabs {
        let before = doc.pages.len();
        doc.ensure(ROW);
        if doc.pages.len() != before {
            head(doc);
        }
        doc.y -= ROW;
        doc.text(MARGIN, doc.y, Font::Regular, 10.0, Align::Left, &line.label);
        doc.text(
            COL_ENERGY,
            doc.y,
            Font::Regular,
            10.0,
            Align::Right,
            &format_kwh(line.wh),
        );
        let amount = line
            .amount_paise
            .map_or_else(|| "-".to_owned(), format_amount);
        doc.text(
            COL_AMOUNT,
            doc.y,
            Font::Regular,
            10.0,
            Align::Right,
            &amount,
        );
    }
    doc.ensure(2.0 * ROW);
    doc.y -= 6.0;
    doc.rule(doc.y, 0.2, 0.8);
    doc.y -= ROW - 2.0;
    let total_wh = s.slabs.iter().map(|l| l.wh).fold(0u64, u64::saturating_add);
    doc.text(MARGIN, doc.y, Font::Bold, 10.0, Align::Left, "Total");
    doc.text(
        COL_ENERGY,
        doc.y,
        Font::Bold,
        10.0,
        Align::Right,
        &format_kwh(total_wh),
    );
    doc.text(
        COL_AMOUNT,
        doc.y,
        Font::Bold,
        10.0,
        Align::Right,
        &format_amount(s.total_paise),
    );
    let priced: Option<i64> = s
        .slabs
        .iter()
        .map(|l| l.amount_paise)
        .try_fold(0i64, |sum, a| a.map(|a| sum.saturating_add(a)));
    if matches!(priced, Some(sum) if sum != s.total_paise && !s.slabs.is_empty()) {
        doc.ensure(ROW);
        doc.y -= ROW - 2.0;
        doc.text(
            MARGIN,
            doc.y,
            Font::Regular,
            8.0,
            Align::Left,
            "Each slab's amount is rounded to the paisa; the bill is rounded once, on its total.",
        );
    }
}

/// The amount of the bill, large.
fn amount(doc: &mut Layout, s: &Statement) {
    doc.ensure(40.0);
    doc.y -= 30.0;
    let label = format!("Amount for {}", s.period);
    doc.text(MARGIN, doc.y, Font::Bold, 14.0, Align::Left, &label);
    let value = format!("Rs. {}", format_amount(s.total_paise));
    doc.text(COL_AMOUNT, doc.y, Font::Bold, 16.0, Align::Right, &value);
    doc.y -= 8.0;
    doc.rule(doc.y, 0.2, 1.2);
}

/// A step of 1, 2, 2.5 or 5 times a power of ten such that four steps reach `max`.
fn nice_step(max: f64) -> f64 {
    let raw = (max / 4.0).max(1e-9);
    let magnitude = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|step| *step >= raw)
        .unwrap_or(10.0 * magnitude)
}

/// `value` with at most two decimals and no trailing zeros.
fn short_number(value: f64) -> String {
    let text = format!("{value:.2}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    text.to_owned()
}

/// The bar chart of daily kWh, with its axis, gridlines and a one-line summary.
fn chart(doc: &mut Layout, s: &Statement, day_labels: &[String]) {
    doc.heading("Daily usage (kWh)", CHART_HEIGHT + 50.0);
    if s.daily_kwh.is_empty() {
        doc.y -= ROW;
        doc.text(
            MARGIN,
            doc.y,
            Font::Regular,
            10.0,
            Align::Left,
            "No daily readings for this period.",
        );
        return;
    }
    let top = doc.y - 12.0;
    let bottom = top - CHART_HEIGHT;
    let left = MARGIN + 34.0;
    let right = PAGE_WIDTH - MARGIN;
    let max = s.daily_kwh.iter().map(|(_, k)| *k).fold(0.0, f64::max);
    let step = nice_step(if max > 0.0 { max } else { 1.0 });
    let y_max = 4.0 * step;
    let scale = CHART_HEIGHT / y_max as f32;

    // Gridlines and their labels.
    for i in 0..=4 {
        let value = step * f64::from(i);
        let y = bottom + value as f32 * scale;
        doc.page
            .save_state()
            .set_stroke_gray(if i == 0 { 0.2 } else { 0.85 })
            .set_line_width(if i == 0 { 0.8 } else { 0.4 })
            .move_to(left, y)
            .line_to(right, y)
            .stroke()
            .restore_state();
        doc.text(
            left - 4.0,
            y - 3.0,
            Font::Regular,
            8.0,
            Align::Right,
            &short_number(value),
        );
    }

    // One bar per day, with its day of month below.
    let slot = (right - left) / s.daily_kwh.len().max(MAX_DAYS / 2) as f32;
    let bar = slot * 0.7;
    for (i, ((_, kwh), label)) in s.daily_kwh.iter().zip(day_labels).enumerate() {
        let x = left + slot * i as f32 + (slot - bar) / 2.0;
        let h = (*kwh as f32 * scale).min(CHART_HEIGHT);
        if h > 0.0 {
            doc.page
                .save_state()
                .set_fill_rgb(0.20, 0.45, 0.70)
                .rect(x, bottom, bar, h)
                .fill_nonzero()
                .restore_state();
        }
        doc.text(
            x + bar / 2.0,
            bottom - 10.0,
            Font::Regular,
            7.0,
            Align::Center,
            label,
        );
    }

    // Summary: highest day and daily average.
    let (peak_day, peak) = s
        .daily_kwh
        .iter()
        .fold((None, f64::MIN), |(d, m), (day, k)| {
            if *k > m { (Some(day), *k) } else { (d, m) }
        });
    let average = s.daily_kwh.iter().map(|(_, k)| k).sum::<f64>() / s.daily_kwh.len() as f64;
    doc.y = bottom - 28.0;
    let summary = format!(
        "Highest day: {} ({peak:.2} kWh). Average: {average:.2} kWh per day over {} days.",
        peak_day.map_or("-", String::as_str),
        s.daily_kwh.len()
    );
    doc.text(MARGIN, doc.y, Font::Regular, 9.0, Align::Left, &summary);
}

/// ε spent against the budget, and the list of releases.
fn privacy(doc: &mut Layout, s: &Statement) {
    let facts = &s.privacy;
    doc.heading("Privacy", 3.0 * ROW);
    let budget = match facts.epsilon_budget {
        Some(b) if b > 0.0 => format!(
            " of the month's budget of {b:.3} ({:.1} %)",
            100.0 * facts.epsilon_spent / b
        ),
        Some(b) => format!(" of the month's budget of {b:.3}"),
        None => String::new(),
    };
    doc.y -= ROW;
    let spent = format!(
        "Privacy budget spent on noised analytics: epsilon = {:.3}{budget}",
        facts.epsilon_spent
    );
    doc.text(MARGIN, doc.y, Font::Regular, 10.0, Align::Left, &spent);
    doc.y -= ROW;
    let lead = if facts.releases.is_empty() {
        "Nothing was released from this home's data in this period."
    } else {
        "Released from this home's data (each release is an entry in the key authority's audit log):"
    };
    doc.text(MARGIN, doc.y, Font::Regular, 10.0, Align::Left, lead);
    let mut first = true;
    for release in &facts.releases {
        let before = doc.pages.len();
        doc.ensure(ROW);
        if first || doc.pages.len() != before {
            doc.y -= ROW;
            doc.text(MARGIN, doc.y, Font::Bold, 9.0, Align::Left, "When");
            doc.text(MARGIN + 130.0, doc.y, Font::Bold, 9.0, Align::Left, "What");
            first = false;
        }
        doc.y -= ROW - 2.0;
        doc.text(
            MARGIN,
            doc.y,
            Font::Regular,
            9.0,
            Align::Left,
            &format_time(release.when),
        );
        doc.text(
            MARGIN + 130.0,
            doc.y,
            Font::Regular,
            9.0,
            Align::Left,
            &release.what,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_steps_cover_the_maximum_in_four() {
        for (max, step) in [
            (1.0, 0.25),
            (7.3, 2.0),
            (10.0, 2.5),
            (12.0, 5.0),
            (0.03, 0.01),
        ] {
            let got = nice_step(max);
            assert!(
                (got - step).abs() < 1e-12,
                "max {max}: step {got}, expected {step}"
            );
            assert!(4.0 * got >= max);
        }
    }

    #[test]
    fn short_numbers_drop_trailing_zeros() {
        assert_eq!(short_number(0.0), "0");
        assert_eq!(short_number(2.5), "2.5");
        assert_eq!(short_number(10.0), "10");
        assert_eq!(short_number(0.25), "0.25");
    }
}
