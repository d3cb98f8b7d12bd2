//! Reading `/metrics`: a parser of the Prometheus text format, strict
//! enough to catch a broken exposition, and sums over its samples.

use std::collections::BTreeMap;

use super::TestApp;

/// One sample of the exposition.
#[derive(Debug)]
pub struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(name: &str) -> bool {
    is_metric_name(name) && !name.contains(':')
}

fn parse_value(text: &str) -> Option<f64> {
    match text {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => text.parse().ok(),
    }
}

/// Parses the Prometheus text format strictly enough to catch a broken
/// exposition: comments are `# HELP name text` or `# TYPE name type`, every
/// other non-empty line is `name{label="value",...} value [timestamp]`.
fn parse_exposition(text: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let words: Vec<&str> = comment.split_whitespace().collect();
            match words.as_slice() {
                ["HELP", name, ..] => assert!(is_metric_name(name), "bad HELP: {line}"),
                ["TYPE", name, kind] => {
                    assert!(is_metric_name(name), "bad TYPE: {line}");
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(kind),
                        "bad TYPE: {line}"
                    );
                }
                _ => {}
            }
            continue;
        }
        samples.push(parse_sample(line).unwrap_or_else(|| panic!("malformed sample: {line:?}")));
    }
    samples
}

fn parse_sample(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' ']).unwrap_or(line.len());
    let name = &line[..name_end];
    if !is_metric_name(name) {
        return None;
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(inner) = rest.strip_prefix('{') {
        rest = inner;
        loop {
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = rest.find('=')?;
            let label = &rest[..eq];
            if !is_label_name(label) {
                return None;
            }
            rest = rest[eq + 1..].strip_prefix('"')?;
            let mut value = String::new();
            let mut chars = rest.char_indices();
            let end = loop {
                match chars.next()? {
                    (i, '"') => break i,
                    (_, '\\') => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        c @ ('\\' | '"') => value.push(c),
                        _ => return None,
                    },
                    (_, '\n') => return None,
                    (_, c) => value.push(c),
                }
            };
            labels.insert(label.to_owned(), value);
            rest = &rest[end + 1..];
            if let Some(after) = rest.strip_prefix(',') {
                rest = after;
            } else if !rest.starts_with('}') {
                return None;
            }
        }
    }
    let mut fields = rest.split_whitespace();
    let value = parse_value(fields.next()?)?;
    if let Some(timestamp) = fields.next() {
        timestamp.parse::<i64>().ok()?;
    }
    if fields.next().is_some() || !rest.starts_with(' ') {
        return None;
    }
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// The sum of the samples named `name` that carry every label of `labels`.
pub fn total(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}

/// [`read_exposition`] of an in-process server's `/metrics` (whose
/// recorder the whole test binary shares).
pub async fn scrape(app: &TestApp) -> (String, Vec<Sample>) {
    read_exposition(&app.client, &app.url("/metrics")).await
}

/// GETs `/metrics` at `url`; returns its text and its samples, parsed
/// strictly.
pub async fn read_exposition(client: &reqwest::Client, url: &str) -> (String, Vec<Sample>) {
    let response = client.get(url).send().await.expect("metrics answer");
    assert_eq!(response.status(), 200);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let text = response.text().await.expect("metrics body");
    let samples = parse_exposition(&text);
    (text, samples)
}

#[test]
fn the_exposition_parser_refuses_broken_lines() {
    assert!(parse_sample(r#"a_total{x="1",y="a \"q\""} 3"#).is_some());
    assert!(parse_sample("a_bucket{le=\"+Inf\"} 2 1700000000").is_some());
    assert!(parse_sample("a_total 1e3").is_some());
    for broken in [
        "a_total",
        "a_total{x=\"1\"}",
        "a_total{x=1} 1",
        "a_total{x=\"1\" 1",
        "a_total{x=\"1\"} one",
        "9lives 1",
        "a_total 1 2 3",
    ] {
        assert!(parse_sample(broken).is_none(), "{broken}");
    }
}
