#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::*;

/// A fresh, empty folder under the system temp dir (removed at the start of the next run of the same test).
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("coxswain-record-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[derive(Serialize)]
struct Tick {
    tick: u64,
    t_s: f64,
    command_rad: [f64; 3],
}

fn tick(i: u64) -> Tick {
    Tick { tick: i, t_s: i as f64 * 0.002, command_rad: [0.1 * i as f64, -1.0 / (i as f64 + 3.0), 1e-300] }
}

fn channels() -> Vec<ChannelSpec> {
    vec![
        ChannelSpec::new("/coxswain/tick", "coxswain.Tick", r#"{"type":"object"}"#),
        ChannelSpec::new("/coxswain/event", "coxswain.Event", r#"{"type":"object"}"#),
        foxglove_log_channel(),
    ]
}

fn metadata() -> Vec<(String, BTreeMap<String, String>)> {
    vec![("coxswain.session".to_string(), [("robot".to_string(), "arm".to_string())].into())]
}

fn file_names(files: &[PathBuf]) -> Vec<String> {
    files.iter().map(|f| f.file_name().unwrap().to_string_lossy().into_owned()).collect()
}

fn write_ticks(opts: &RecordOptions, n: u64) -> RecordingSummary {
    let mut rec = McapRecorder::create(opts, &metadata(), &channels()).unwrap();
    let tick_ch = rec.channel("/coxswain/tick").unwrap();
    let event_ch = rec.channel("/coxswain/event").unwrap();
    for i in 0..n {
        rec.write(tick_ch, 1_000_000_000 + i * 2_000_000, &tick(i)).unwrap();
        if i % 100 == 0 {
            rec.write(event_ch, 1_000_000_000 + i * 2_000_000, &serde_json::json!({"kind": "x", "i": i})).unwrap();
        }
    }
    rec.finish().unwrap()
}

#[test]
fn size_rollover_makes_several_files_each_complete_with_every_channel_and_the_metadata() {
    let dir = temp_dir("size");
    let opts = RecordOptions { max_file_bytes: 20_000, chunk_bytes: 8_000, ..RecordOptions::new(&dir, "run") };
    let summary = write_ticks(&opts, 5_000);
    assert!(summary.files.len() >= 3, "{:?}", summary.files);
    assert_eq!(file_names(&summary.files[..2]), ["run-00000.mcap", "run-00001.mcap"]);
    assert_eq!(summary.messages_per_topic["/coxswain/tick"], 5_000);
    assert_eq!(summary.messages_per_topic["/coxswain/event"], 50);
    assert_eq!(summary.messages_per_topic["/coxswain/log"], 0);
    let on_disk: u64 = summary.files.iter().map(|f| std::fs::metadata(f).unwrap().len()).sum();
    assert_eq!(summary.bytes, on_disk);

    let mut ticks_seen = 0;
    for file in &summary.files {
        let one = read_recording(file).unwrap();
        assert_eq!(one.channels.len(), 3, "{}", file.display());
        for c in one.channels.values() {
            assert_eq!((c.message_encoding.as_str(), c.schema_encoding.as_str()), ("json", "jsonschema"));
        }
        assert_eq!(one.last_metadata("coxswain.session").unwrap()["robot"], "arm");
        let rec_meta = one.last_metadata(RECORDER_METADATA).unwrap();
        let in_file = one.topic("/coxswain/tick").count() + one.topic("/coxswain/event").count();
        assert_eq!(rec_meta["messages_in_file"], in_file.to_string());
        ticks_seen += one.topic("/coxswain/tick").count();
    }
    assert_eq!(ticks_seen, 5_000);
    assert!(!dir.read_dir().unwrap().any(|e| e.unwrap().path().to_string_lossy().ends_with(".part")));
}

#[test]
fn duration_rollover_starts_a_file_every_max_file_s_of_log_time() {
    let dir = temp_dir("duration");
    // 2 ms per tick, 1 s per file: 2500 ticks = 5 s -> 5 files of 500 ticks.
    let opts = RecordOptions { max_file_s: 1.0, ..RecordOptions::new(&dir, "d") };
    let summary = write_ticks(&opts, 2_500);
    assert_eq!(summary.files.len(), 5);
    for file in &summary.files {
        let one = read_recording(file).unwrap();
        let times: Vec<u64> = one.topic("/coxswain/tick").map(|m| m.log_time_ns).collect();
        assert_eq!(times.len(), 500, "{}", file.display());
        assert!(times.last().unwrap() - times.first().unwrap() < 1_000_000_000);
    }
}

#[test]
fn read_dir_gives_every_message_in_log_time_order_with_the_exact_values_written() {
    let dir = temp_dir("order");
    let opts = RecordOptions { max_file_bytes: 30_000, ..RecordOptions::new(&dir, "o") };
    let mut rec = McapRecorder::create(&opts, &[], &channels()).unwrap();
    let tick_ch = rec.channel("/coxswain/tick").unwrap();
    let log_ch = rec.channel(LOG_TOPIC).unwrap();
    // Log lines arrive a little late (the recorder drains rings in turn): out of order by up to 3 ticks.
    for i in 0..3_000u64 {
        rec.write(tick_ch, i * 2_000_000, &tick(i)).unwrap();
        if i % 10 == 3 {
            let t = (i - 3) * 2_000_000 + 1;
            rec.write(log_ch, t, &FoxgloveLog::new(t, LogLevel::Info, "test", format!("line {i}"))).unwrap();
        }
    }
    let summary = rec.finish().unwrap();
    assert!(summary.files.len() > 1);
    let all = read_dir(&dir).unwrap();
    assert_eq!(all.messages.len(), 3_300);
    assert!(all.messages.windows(2).all(|w| w[0].log_time_ns <= w[1].log_time_ns));
    for (i, m) in all.topic("/coxswain/tick").enumerate() {
        let v: serde_json::Value = serde_json::from_slice(&m.data).unwrap();
        let want = tick(i as u64);
        assert_eq!(v["tick"], i as u64);
        assert_eq!(json::float(&v["t_s"]).unwrap().to_bits(), want.t_s.to_bits());
        for j in 0..3 {
            assert_eq!(json::float(&v["command_rad"][j]).unwrap().to_bits(), want.command_rad[j].to_bits());
        }
        assert_eq!(&*m.schema_name, "coxswain.Tick");
    }
    let first_log = all.topic(LOG_TOPIC).next().unwrap();
    assert_eq!(&*first_log.schema_name, "foxglove.Log");
    assert_eq!(first_log.log_time_ns, 1);
}

#[test]
fn a_crash_mid_file_leaves_earlier_files_readable_and_the_unfinished_one_as_part() {
    let dir = temp_dir("crash");
    let opts = RecordOptions { max_file_bytes: 10_000, chunk_bytes: 4_000, ..RecordOptions::new(&dir, "c") };
    let mut rec = McapRecorder::create(&opts, &metadata(), &channels()).unwrap();
    let tick_ch = rec.channel("/coxswain/tick").unwrap();
    for i in 0..2_000 {
        rec.write(tick_ch, i * 2_000_000, &tick(i)).unwrap();
    }
    rec.flush().unwrap();
    let part = rec.current_file().unwrap().to_path_buf();
    // A crash: no footer, no rename, no Drop.
    std::mem::forget(rec);

    let complete = list_dir(&dir).unwrap();
    assert!(!complete.is_empty());
    assert!(part.to_string_lossy().ends_with(".part") && part.exists());
    let earlier = read_dir(&dir).unwrap();
    let ticks: Vec<u64> = earlier
        .topic("/coxswain/tick")
        .map(|m| serde_json::from_slice::<serde_json::Value>(&m.data).unwrap()["tick"].as_u64().unwrap())
        .collect();
    assert_eq!(ticks, (0..ticks.len() as u64).collect::<Vec<_>>());
    let err = read_recording(&part).unwrap_err();
    assert!(err.to_string().contains(&*part.to_string_lossy()), "{err}");
}

#[test]
fn create_refuses_to_overwrite_an_existing_recording() {
    let dir = temp_dir("exists");
    let opts = RecordOptions::new(&dir, "same");
    write_ticks(&opts, 10);
    let err = McapRecorder::create(&opts, &[], &channels()).unwrap_err();
    assert!(matches!(&err, RecordError::Exists { path } if path.ends_with("same-00000.mcap")), "{err}");
}

#[test]
fn drops_counted_by_the_producer_reach_the_summary_and_each_files_metadata() {
    let dir = temp_dir("drops");
    let opts = RecordOptions { max_file_s: 1.0, ..RecordOptions::new(&dir, "drops") };
    let mut rec = McapRecorder::create(&opts, &[], &channels()).unwrap();
    let tick_ch = rec.channel("/coxswain/tick").unwrap();
    let event_ch = rec.channel("/coxswain/event").unwrap();
    let counter = rec.drop_counter();
    let producer = {
        let counter = counter.clone();
        std::thread::spawn(move || {
            for _ in 0..7 {
                counter.record_drop(tick_ch);
            }
            counter.add(event_ch, 2);
        })
    };
    producer.join().unwrap();
    rec.write(tick_ch, 0, &tick(0)).unwrap();
    rec.write(tick_ch, 1_500_000_000, &tick(1)).unwrap(); // second file
    counter.record_drop(tick_ch);
    let summary = rec.finish().unwrap();
    assert_eq!(summary.messages_dropped, 10);
    assert_eq!(summary.dropped_per_topic["/coxswain/tick"], 8);
    assert_eq!(summary.dropped_per_topic["/coxswain/event"], 2);
    assert_eq!(summary.files.len(), 2);
    let first = read_recording(&summary.files[0]).unwrap();
    assert_eq!(first.last_metadata(RECORDER_METADATA).unwrap()["messages_dropped"], "9");
    let second = read_recording(&summary.files[1]).unwrap();
    let meta = second.last_metadata(RECORDER_METADATA).unwrap();
    assert_eq!(meta["messages_dropped"], "10");
    assert_eq!(meta["dropped:/coxswain/tick"], "8");
}

#[test]
fn zstd_chunks_are_smaller_than_uncompressed_ones_and_read_back_the_same() {
    let plain_dir = temp_dir("plain");
    let zstd_dir = temp_dir("zstd");
    let plain = write_ticks(
        &RecordOptions { compression: RecordCompression::None, ..RecordOptions::new(&plain_dir, "p") },
        2_000,
    );
    let zstd = write_ticks(&RecordOptions::new(&zstd_dir, "z"), 2_000);
    assert!(zstd.bytes * 2 < plain.bytes, "zstd {} vs plain {}", zstd.bytes, plain.bytes);
    let a = read_dir(&plain_dir).unwrap();
    let b = read_dir(&zstd_dir).unwrap();
    assert_eq!(a.messages, b.messages);
}

#[test]
fn bad_options_and_channels_are_refused_naming_the_field() {
    let dir = temp_dir("options");
    let field_of = |opts: RecordOptions, ch: &[ChannelSpec]| match McapRecorder::create(&opts, &[], ch).unwrap_err() {
        RecordError::Options { field, .. } => field,
        other => panic!("{other}"),
    };
    let base = RecordOptions::new(&dir, "ok");
    assert_eq!(field_of(RecordOptions { prefix: "a/b".into(), ..base.clone() }, &channels()), "prefix");
    assert_eq!(field_of(RecordOptions { max_file_s: f64::NAN, ..base.clone() }, &channels()), "max_file_s");
    assert_eq!(field_of(RecordOptions { max_file_bytes: 0, ..base.clone() }, &channels()), "max_file_bytes");
    let mut twice = channels();
    twice.push(channels()[0].clone());
    assert_eq!(field_of(base.clone(), &twice), "channels");
    assert!(std::fs::read_dir(&dir).unwrap().next().is_none(), "nothing written for refused options");
}

#[test]
fn an_unencodable_message_is_an_error_naming_the_topic_and_writes_nothing() {
    struct Refuses;
    impl Serialize for Refuses {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("no"))
        }
    }
    let dir = temp_dir("encode");
    let mut rec = McapRecorder::create(&RecordOptions::new(&dir, "e"), &[], &channels()).unwrap();
    let ch = rec.channel("/coxswain/event").unwrap();
    let err = rec.write(ch, 5, &Refuses).unwrap_err();
    assert!(err.to_string().contains("/coxswain/event"), "{err}");
    let summary = rec.finish().unwrap();
    assert_eq!(summary.messages(), 0);
    assert_eq!(read_recording(Path::new(&summary.files[0])).unwrap().messages.len(), 0);
}
