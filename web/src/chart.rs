//! Server-rendered SVG charts: lines and bars over a numeric x axis, an optional horizontal
//! limit line (a feeder's capacity), labelled ticks, a legend. Colours come from the
//! stylesheet's `series-N` classes, so the page needs no inline style.

use std::fmt::Write as _;

use crate::page::escape;

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 280.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 16.0;
const BOTTOM: f64 = 40.0;

/// How a series is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// A polyline through the points, with a dot at each.
    Line,
    /// A bar per point.
    Bars,
}

/// One named series of `(x, y)` points.
#[derive(Debug, Clone)]
pub struct Series {
    /// The legend's name.
    pub name: String,
    /// The points, in x order.
    pub points: Vec<(f64, f64)>,
    /// How it is drawn.
    pub mark: Mark,
}

/// A chart: its element id, the axis labels, the series, x tick labels and an optional
/// horizontal limit.
#[derive(Debug, Clone, Default)]
pub struct Chart {
    /// The SVG element's `id` (and `data-testid`).
    pub id: String,
    /// The accessible title.
    pub title: String,
    /// The y axis' unit (e.g. `kWh`).
    pub y_label: String,
    /// The series.
    pub series: Vec<Series>,
    /// Labels at chosen x positions (e.g. hours or days).
    pub x_ticks: Vec<(f64, String)>,
    /// A horizontal line at this y with its label (drawn in the alert colour).
    pub limit: Option<(f64, String)>,
}

fn nice_max(max: f64) -> f64 {
    if max <= 0.0 || !max.is_finite() {
        return 1.0;
    }
    let magnitude = 10f64.powf(max.log10().floor());
    for step in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if max <= step * magnitude {
            return step * magnitude;
        }
    }
    10.0 * magnitude
}

impl Chart {
    /// The chart as an inline `<svg>` element (with an empty-data message when there is
    /// nothing to draw).
    #[must_use]
    pub fn render(&self) -> String {
        let points = self.series.iter().flat_map(|s| s.points.iter());
        let (mut x_min, mut x_max, mut y_max, mut y_min) =
            (f64::INFINITY, f64::NEG_INFINITY, 0f64, 0f64);
        let mut any = false;
        for &(x, y) in points {
            if x.is_finite() && y.is_finite() {
                any = true;
                x_min = x_min.min(x);
                x_max = x_max.max(x);
                y_max = y_max.max(y);
                y_min = y_min.min(y);
            }
        }
        let id = escape(&self.id);
        if !any {
            return format!(
                "<p class=\"muted\" id=\"{id}\" data-testid=\"{id}\">{}: nothing released yet.</p>",
                escape(&self.title)
            );
        }
        if let Some((limit, _)) = self.limit {
            y_max = y_max.max(limit);
        }
        let y_top = nice_max(y_max * 1.05);
        // Negative values (a noised total can be below zero) get room below the axis.
        let y_bottom = if y_min < 0.0 {
            -nice_max(-y_min * 1.05)
        } else {
            0.0
        };
        let bars = self.series.iter().filter(|s| s.mark == Mark::Bars).count();
        // Bars are centred on their x: leave half a step of room at both ends.
        let step = smallest_step(&self.series).unwrap_or(1.0);
        let (x_lo, x_hi) = if bars > 0 {
            (x_min - step / 2.0, x_max + step / 2.0)
        } else if x_max > x_min {
            (x_min, x_max)
        } else {
            (x_min - 0.5, x_max + 0.5)
        };
        let plot_w = WIDTH - LEFT - RIGHT;
        let plot_h = HEIGHT - TOP - BOTTOM;
        let sx = |x: f64| LEFT + (x - x_lo) / (x_hi - x_lo) * plot_w;
        let sy = |y: f64| TOP + plot_h - ((y - y_bottom) / (y_top - y_bottom)) * plot_h;

        let mut svg = String::new();
        let _ = write!(
            svg,
            "<svg class=\"chart\" id=\"{id}\" data-testid=\"{id}\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" \
             role=\"img\" aria-label=\"{title}\"><title>{title}</title>",
            title = escape(&self.title)
        );
        // Grid and y ticks.
        for i in 0..=4 {
            let y = y_bottom + (y_top - y_bottom) * f64::from(i) / 4.0;
            let py = sy(y);
            let _ = write!(
                svg,
                "<line class=\"grid\" x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{py:.1}\" y2=\"{py:.1}\"/>\
                 <text class=\"tick\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
                WIDTH - RIGHT,
                LEFT - 6.0,
                py + 4.0,
                format_tick(y)
            );
        }
        let _ = write!(
            svg,
            "<text class=\"axis\" x=\"12\" y=\"{:.1}\" transform=\"rotate(-90 12 {:.1})\" \
             text-anchor=\"middle\">{}</text>",
            TOP + plot_h / 2.0,
            TOP + plot_h / 2.0,
            escape(&self.y_label)
        );
        for (x, label) in &self.x_ticks {
            let px = sx(*x);
            let _ = write!(
                svg,
                "<text class=\"tick\" x=\"{px:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                HEIGHT - BOTTOM + 16.0,
                escape(label)
            );
        }
        // Series.
        let bar_w = if bars > 0 {
            (plot_w / ((x_hi - x_lo) / step)) * 0.8 / bars as f64
        } else {
            0.0
        };
        let mut bar_index = 0usize;
        for (n, series) in self.series.iter().enumerate() {
            let class = format!("series-{}", n % 6);
            match series.mark {
                Mark::Line => {
                    let path: Vec<String> = series
                        .points
                        .iter()
                        .filter(|(x, y)| x.is_finite() && y.is_finite())
                        .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
                        .collect();
                    let _ = write!(
                        svg,
                        "<polyline class=\"line {class}\" points=\"{}\"/>",
                        path.join(" ")
                    );
                    for &(x, y) in &series.points {
                        let _ = write!(
                            svg,
                            "<circle class=\"dot {class}\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.5\">\
                             <title>{}: {}</title></circle>",
                            sx(x),
                            sy(y),
                            escape(&series.name),
                            format_tick(y)
                        );
                    }
                }
                Mark::Bars => {
                    let offset = (bar_index as f64 - (bars as f64 - 1.0) / 2.0) * bar_w;
                    bar_index += 1;
                    for &(x, y) in &series.points {
                        let top = sy(y.max(0.0));
                        let bottom = sy(y.min(0.0));
                        let _ = write!(
                            svg,
                            "<rect class=\"bar {class}\" x=\"{:.1}\" y=\"{top:.1}\" width=\"{:.1}\" \
                             height=\"{:.1}\"><title>{}: {}</title></rect>",
                            sx(x) + offset - bar_w / 2.0,
                            bar_w.max(1.0),
                            (bottom - top).max(0.0),
                            escape(&series.name),
                            format_tick(y)
                        );
                    }
                }
            }
        }
        if let Some((limit, label)) = &self.limit {
            let py = sy(*limit);
            let _ = write!(
                svg,
                "<line class=\"limit\" x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{py:.1}\" y2=\"{py:.1}\"/>\
                 <text class=\"limit-label\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
                WIDTH - RIGHT,
                WIDTH - RIGHT,
                py - 4.0,
                escape(label)
            );
        }
        // Legend.
        let mut lx = LEFT;
        for (n, series) in self.series.iter().enumerate() {
            let _ = write!(
                svg,
                "<rect class=\"series-{} legend\" x=\"{lx:.1}\" y=\"{:.1}\" width=\"10\" height=\"10\"/>\
                 <text class=\"tick\" x=\"{:.1}\" y=\"{:.1}\">{}</text>",
                n % 6,
                HEIGHT - 14.0,
                lx + 14.0,
                HEIGHT - 5.0,
                escape(&series.name)
            );
            lx += 24.0 + 7.0 * series.name.chars().count() as f64;
        }
        svg.push_str("</svg>");
        svg
    }
}

fn smallest_step(series: &[Series]) -> Option<f64> {
    let mut xs: Vec<f64> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .filter(|x| x.is_finite())
        .collect();
    xs.sort_by(f64::total_cmp);
    xs.dedup();
    xs.windows(2)
        .map(|w| w[1] - w[0])
        .filter(|d| *d > 0.0)
        .min_by(f64::total_cmp)
}

fn format_tick(value: f64) -> String {
    if value.abs() >= 100.0 || value == value.trunc() {
        format!("{value:.0}")
    } else if value.abs() >= 1.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_chart_says_so() {
        let chart = Chart {
            id: "c".into(),
            title: "Load".into(),
            ..Chart::default()
        };
        assert!(chart.render().contains("nothing released yet"));
    }

    #[test]
    fn lines_bars_and_the_limit_are_drawn_and_escaped() {
        let chart = Chart {
            id: "load".into(),
            title: "Feeder <1>".into(),
            y_label: "kW".into(),
            series: vec![
                Series {
                    name: "forecast".into(),
                    points: vec![(0.0, 1.0), (1.0, 3.0)],
                    mark: Mark::Line,
                },
                Series {
                    name: "actual".into(),
                    points: vec![(0.0, 2.0), (1.0, 2.5)],
                    mark: Mark::Bars,
                },
            ],
            x_ticks: vec![(0.0, "00".into()), (1.0, "01".into())],
            limit: Some((2.8, "capacity 2.8 kW".into())),
        };
        let svg = chart.render();
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(svg.contains("Feeder &lt;1&gt;"));
        assert_eq!(svg.matches("<polyline").count(), 1);
        assert_eq!(svg.matches("<rect class=\"bar").count(), 2);
        assert!(svg.contains("class=\"limit\""));
        assert!(!svg.contains("style="));
    }

    #[test]
    fn negative_values_stay_inside_the_plot() {
        let chart = Chart {
            id: "c".into(),
            title: "noised".into(),
            series: vec![Series {
                name: "actual".into(),
                points: vec![(0.0, -3.0), (1.0, 8.0)],
                mark: Mark::Line,
            }],
            ..Chart::default()
        };
        let svg = chart.render();
        let ys: Vec<f64> = svg
            .split("cy=\"")
            .skip(1)
            .map(|rest| {
                rest.split('"')
                    .next()
                    .unwrap_or("")
                    .parse()
                    .unwrap_or(f64::NAN)
            })
            .collect();
        assert_eq!(ys.len(), 2);
        for y in ys {
            assert!((TOP..=HEIGHT - BOTTOM).contains(&y), "{y} outside the plot");
        }
    }

    #[test]
    fn nice_maxima() {
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(7.3), 10.0);
        assert_eq!(nice_max(1.9), 2.0);
        assert_eq!(nice_max(230.0), 250.0);
    }
}
