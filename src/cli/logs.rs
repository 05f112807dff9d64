//! `dts logs [-f] ID [INDEX]`: the output of running items, from the
//! server's live logs (`GET /v1/tasks/{id}/items/{index}/log`,
//! `GET /v1/tasks/{id}/log`).
//!
//! With an index, the item's output as it wrote it: stdout to stdout,
//! stderr to stderr (its tail while it runs, everything kept once it
//! ended). Without one, every running item, each line after the item's
//! input and a TAB, as `dts run --tag` prints. `-f` follows: new output as
//! it is written, until the item (or, without an index, the task) ends.

use super::client::Client;
use super::commands::write_tagged;
use super::terminal::Console;
use anyhow::{Context, Result, bail};
use dts_api::views::TaskView;
use reqwest::Method;
use serde::Deserialize;
use std::collections::HashMap;
use std::io::Write;
use std::process::ExitCode;

/// One `event: log` or `event: end` of a log follow.
#[derive(Debug, Deserialize)]
struct LogData {
    index: u64,
    #[serde(default)]
    stream: Option<String>,
    #[serde(default)]
    text: String,
}

/// The most items a task may have for `dts logs ID` to tag lines with
/// their inputs: it reads the whole input list once. Larger tasks' lines are
/// tagged with the item's index.
const TAG_INPUTS_UP_TO: u64 = 100_000;

/// `dts logs [-f] ID [INDEX]`.
pub async fn logs(
    client: &Client,
    console: &mut Console,
    id: &str,
    index: Option<u64>,
    follow: bool,
) -> Result<ExitCode> {
    // `id` may be a prefix; the task names the full id, and its inputs the
    // tags, unless there are too many to fetch for a tag.
    let summary = format!("/v1/tasks/{id}?summary=true");
    let (mut task, _) = client
        .fetch::<TaskView>(Method::GET, &summary, None)
        .await?;
    if index.is_none() && task.items_total <= TAG_INPUTS_UP_TO {
        let full = format!("/v1/tasks/{}", task.id);
        task = client.fetch::<TaskView>(Method::GET, &full, None).await?.0;
    }
    let inputs: Vec<Vec<u8>> = task
        .input_list
        .unwrap_or_default()
        .iter()
        .map(|input| input.as_bytes().to_vec())
        .collect();
    let id = task.id;
    let follow_flag = if follow { "?follow=true" } else { "" };
    let path = match index {
        Some(index) => format!("/v1/tasks/{id}/items/{index}/log{follow_flag}"),
        None => format!("/v1/tasks/{id}/log{follow_flag}"),
    };
    let mut response = client.open(&path).await?;
    if !follow {
        let text = response
            .bytes()
            .await
            .context("cannot read the server's answer")?;
        match index {
            Some(_) => console.out.write_all(&text)?,
            None => {
                // Lines come as `INDEX<TAB>line`; the tag is the input.
                for line in text.split_inclusive(|b| *b == b'\n') {
                    let (at, rest) = split_index(line)?;
                    write_tagged(&mut console.out, rest, Some(&tag(&inputs, at)))?;
                }
                if text.is_empty() {
                    // An empty answer alone would look like a broken command.
                    writeln!(
                        console.err,
                        "dts: no item of task {id} is running now (the task is {}); \
                         `dts results {id}` shows what ended",
                        task.status
                    )?;
                }
            }
        }
        console.out.flush()?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut events = EventReader::default();
    // Per item and stream, the start of a line not finished yet (tagged
    // output shows whole lines).
    let mut pending: HashMap<(u64, bool), Vec<u8>> = HashMap::new();
    // ends: when the server ends the stream (the item or the task ended).
    while let Some(chunk) = response
        .chunk()
        .await
        .context("the server's log stream broke off")?
    {
        for (name, data) in events.push(&chunk) {
            let data: LogData = serde_json::from_str(&data)
                .with_context(|| format!("the server sent an unreadable log event: {data}"))?;
            let stderr = data.stream.as_deref() == Some("stderr");
            match (name.as_str(), index) {
                ("log", Some(_)) => {
                    if stderr {
                        console.out.flush()?;
                        console.err.write_all(data.text.as_bytes())?;
                        console.err.flush()?;
                    } else {
                        console.out.write_all(data.text.as_bytes())?;
                        console.out.flush()?;
                    }
                }
                ("log", None) => {
                    let line = pending.entry((data.index, stderr)).or_default();
                    line.extend_from_slice(data.text.as_bytes());
                    let whole = line
                        .iter()
                        .rposition(|b| *b == b'\n')
                        .map_or(0, |at| at + 1);
                    let done: Vec<u8> = line.drain(..whole).collect();
                    let prefix = tag(&inputs, data.index);
                    if stderr {
                        write_tagged(&mut console.err, &done, Some(&prefix))?;
                        console.err.flush()?;
                    } else {
                        write_tagged(&mut console.out, &done, Some(&prefix))?;
                        console.out.flush()?;
                    }
                }
                ("end", _) => {
                    let prefix = tag(&inputs, data.index);
                    for stderr in [false, true] {
                        if let Some(mut rest) = pending.remove(&(data.index, stderr)) {
                            if rest.is_empty() {
                                continue;
                            }
                            rest.push(b'\n');
                            if stderr {
                                write_tagged(&mut console.err, &rest, Some(&prefix))?;
                            } else {
                                write_tagged(&mut console.out, &rest, Some(&prefix))?;
                            }
                        }
                    }
                    if index.is_some() {
                        console.out.flush()?;
                        return Ok(ExitCode::SUCCESS);
                    }
                }
                _ => {}
            }
        }
    }
    console.out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// `INDEX<TAB>rest` of a task log line.
fn split_index(line: &[u8]) -> Result<(u64, &[u8])> {
    let tab = line.iter().position(|b| *b == b'\t');
    let parsed = tab.and_then(|tab| {
        std::str::from_utf8(&line[..tab])
            .ok()?
            .parse::<u64>()
            .ok()
            .map(|index| (index, &line[tab + 1..]))
    });
    match parsed {
        Some(parsed) => Ok(parsed),
        None => bail!(
            "the server's task log has a line that does not start with an item index and a TAB: {}",
            String::from_utf8_lossy(line).trim_end()
        ),
    }
}

/// The tag of item `index`: its input and a TAB (its index when the task
/// did not list it).
fn tag(inputs: &[Vec<u8>], index: u64) -> Vec<u8> {
    let mut tag = usize::try_from(index)
        .ok()
        .and_then(|at| inputs.get(at))
        .cloned()
        .unwrap_or_else(|| index.to_string().into_bytes());
    tag.push(b'\t');
    tag
}

/// Server-Sent Events out of the bytes of a response, as they come.
#[derive(Default)]
struct EventReader {
    buffer: Vec<u8>,
}

impl EventReader {
    /// The events completed by `bytes`: (name, data).
    fn push(&mut self, bytes: &[u8]) -> Vec<(String, String)> {
        self.buffer.extend_from_slice(bytes);
        let mut events = Vec::new();
        // ends: each turn removes one blank-line-terminated block.
        while let Some(at) = find_blank_line(&self.buffer) {
            let block: Vec<u8> = self.buffer.drain(..at.end).collect();
            let text = String::from_utf8_lossy(&block[..at.start]);
            let (mut name, mut data) = (String::from("message"), Vec::new());
            for line in text.lines() {
                if let Some(value) = line.strip_prefix("event:") {
                    name = value.trim_start().to_owned();
                } else if let Some(value) = line.strip_prefix("data:") {
                    data.push(value.strip_prefix(' ').unwrap_or(value).to_owned());
                }
            }
            if !data.is_empty() {
                events.push((name, data.join("\n")));
            }
        }
        events
    }
}

/// Where the first blank line ends an event block: the block's bytes and
/// the end of the separator.
fn find_blank_line(buffer: &[u8]) -> Option<std::ops::Range<usize>> {
    let lf = buffer
        .windows(2)
        .position(|w| w == b"\n\n")
        .map(|at| at..at + 2);
    let crlf = buffer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| at..at + 4);
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.start <= b.start { a } else { b }),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_chunks_are_read_whole_and_keep_alives_are_skipped() {
        let mut reader = EventReader::default();
        assert_eq!(reader.push(b"event: log\ndata: {\"in"), []);
        assert_eq!(
            reader.push(b"dex\":0}\n\n:\n\nevent: end\ndata: {}\n\n"),
            [
                ("log".to_owned(), "{\"index\":0}".to_owned()),
                ("end".to_owned(), "{}".to_owned())
            ]
        );
    }

    #[test]
    fn a_task_log_line_is_read_as_its_index_and_the_rest() {
        assert_eq!(split_index(b"12\tline\n").unwrap(), (12, &b"line\n"[..]));
        assert!(split_index(b"line\n").is_err());
    }
}
