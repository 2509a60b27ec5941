//! A wrong manifest gives an error that names the manifest field and the tensor, never a panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use coxswain::policy::{Manifest, Policy, PolicyOptions};
use coxswain::Error;
use coxswain_tests::{fixture, model, ort};

fn lite3_text() -> String {
    std::fs::read_to_string(fixture("lite3").join("manifest.toml")).unwrap()
}

fn dp_text() -> String {
    std::fs::read_to_string(model("reach-dp").join("manifest.toml")).unwrap()
}

/// Parses `text` as if it sat in `dir`, then plans it against the real graph.
fn load(dir: PathBuf, text: &str, candidates: usize) -> Result<Policy, Error> {
    let path = dir.join("manifest-under-test.toml");
    let manifest = Manifest::parse(text, &path)?;
    Policy::from_manifest(ort(), manifest, &PolicyOptions { candidates, ..PolicyOptions::default() })
}

fn binding_error(r: Result<Policy, Error>) -> (String, String, String) {
    match r {
        Err(Error::Binding { field, tensor, message, .. }) => (field, tensor, message),
        Err(other) => panic!("expected a binding error, got: {other}"),
        Ok(_) => panic!("expected a binding error, the manifest loaded"),
    }
}

fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "test setup: `{from}` not in manifest");
    text.replacen(from, to, 1)
}

#[test]
fn the_shipped_manifests_load() {
    for dir in [fixture("lite3"), fixture("bhl-biped"), fixture("bhl-video")] {
        Policy::load(ort(), &dir, &PolicyOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    }
}

#[test]
fn wrong_input_tensor_name_names_field_and_tensor() {
    let text = replace_once(&lite3_text(), "observation = \"obs\"", "observation = \"observations\"");
    let (field, tensor, message) = binding_error(load(fixture("lite3"), &text, 1));
    assert_eq!(field, "io.observation");
    assert_eq!(tensor, "observations");
    assert!(message.contains("`obs`"), "lists the real inputs: {message}");
}

#[test]
fn wrong_output_tensor_name_names_field_and_tensor() {
    let text = replace_once(&lite3_text(), "output = \"actions\"", "output = \"action\"");
    let (field, tensor, message) = binding_error(load(fixture("lite3"), &text, 1));
    assert_eq!(field, "io.output");
    assert_eq!(tensor, "action");
    assert!(message.contains("`actions`"), "{message}");
}

#[test]
fn observation_width_mismatch_names_field_and_tensor() {
    // Dropping the last_action term leaves 33 values for a 45-wide input.
    let text = replace_once(&lite3_text(), "[[observation.terms]]\nfield = \"last_action\"\n", "");
    let (field, tensor, message) = binding_error(load(fixture("lite3"), &text, 1));
    assert_eq!(field, "io.observation");
    assert_eq!(tensor, "obs");
    assert!(message.contains("[1, 45]") && message.contains("33"), "{message}");
}

#[test]
fn action_joint_count_mismatch_names_field_and_tensor() {
    // The whole 45-value input as one named field, and 11 joints for a 12-wide output.
    let joints: Vec<String> = (0..11).map(|i| format!("\"j{i}\"")).collect();
    let text = format!(
        "format_version = 1\n[model]\nkind = \"direct\"\n[io]\nobservation = \"obs\"\noutput = \"actions\"\n\
         [[observation.terms]]\nfield = \"everything\"\nsize = 45\n\
         [action]\njoints = [{}]\ndt_s = 0.02\n",
        joints.join(", ")
    );
    let (field, tensor, message) = binding_error(load(fixture("lite3"), &text, 1));
    assert_eq!(field, "io.output");
    assert_eq!(tensor, "actions");
    assert!(message.contains("action.joints=11"), "{message}");
}

#[test]
fn chunk_shape_mismatch_names_horizon_and_tensor() {
    let text = replace_once(&dp_text(), "horizon = 16", "horizon = 8");
    let (field, tensor, message) = binding_error(load(model("reach-dp"), &text, 1));
    assert_eq!(field, "io.sample");
    assert_eq!(tensor, "sample");
    assert!(message.contains("action.horizon=8"), "{message}");
}

#[test]
fn wrong_element_type_names_field_and_tensor() {
    // `timestep` is int64; the observation must be float32.
    let text = replace_once(&dp_text(), "observation = \"obs\"", "observation = \"timestep\"");
    let text = replace_once(&text, "timestep = \"timestep\"", "timestep = \"obs\"");
    let (field, tensor, message) = binding_error(load(model("reach-dp"), &text, 1));
    assert_eq!(field, "io.observation");
    assert_eq!(tensor, "timestep");
    assert!(message.contains("int64") && message.contains("float32"), "{message}");
}

#[test]
fn an_unbound_graph_input_is_named() {
    // A direct manifest for a denoiser leaves `sample` and `timestep` unfed.
    let text = replace_once(&dp_text(), "kind = \"diffusion\"", "kind = \"direct\"");
    let text = replace_once(&text, "sample = \"sample\"\n", "");
    let text = replace_once(&text, "timestep = \"timestep\"\n", "");
    let text = text.split("[sampler]").next().unwrap().to_string();
    let (field, tensor, message) = binding_error(load(model("reach-dp"), &text, 1));
    assert_eq!(field, "io");
    assert!(tensor == "sample" || tensor == "timestep", "{tensor}");
    assert!(message.contains("fed by no manifest field"), "{message}");
}

#[test]
fn fixed_batch_refuses_several_candidates() {
    // The reach flow model has a dynamic batch; Lite3's is fixed at 1 and deterministic anyway.
    match load(fixture("lite3"), &lite3_text(), 4) {
        Err(Error::Field { field, message, .. }) => {
            assert_eq!(field, "model.kind");
            assert!(message.contains("candidates"), "{message}");
        }
        other => panic!("expected a field error, got {other:?}"),
    }
}

#[test]
fn missing_field_is_a_parse_error_naming_it() {
    let text = replace_once(&lite3_text(), "dt_s = 0.012\n", "");
    match Manifest::parse(&text, &fixture("lite3").join("manifest.toml")) {
        Err(Error::Parse { path, message }) => {
            assert!(path.ends_with("manifest.toml"));
            assert!(message.contains("dt_s"), "{message}");
        }
        other => panic!("expected a parse error, got {other:?}"),
    }
}

#[test]
fn unknown_field_is_refused() {
    let text = replace_once(&lite3_text(), "horizon = 1\n", "horizon = 1\nhorizonn = 2\n");
    match Manifest::parse(&text, &fixture("lite3").join("manifest.toml")) {
        Err(Error::Parse { message, .. }) => assert!(message.contains("horizonn"), "{message}"),
        other => panic!("expected a parse error, got {other:?}"),
    }
}

#[test]
fn bad_values_name_their_field() {
    let cases = [
        ("dt_s = 0.012", "dt_s = -0.012", "action.dt_s"),
        ("kind = \"direct\"", "kind = \"transformer\"", "model.kind"),
        ("field = \"command\"\nsize = 3", "field = \"command\"", "observation.terms[2].size"),
        (
            "field = \"ang_vel\"\nscale = 0.25",
            "field = \"ang_vel\"\nscale = [0.25, 0.25]",
            "observation.terms[0].scale",
        ),
        ("horizon = 1", "horizon = 0", "action.horizon"),
        ("format_version = 1", "format_version = 7", "format_version"),
    ];
    for (from, to, want) in cases {
        let text = replace_once(&lite3_text(), from, to);
        match Manifest::parse(&text, &fixture("lite3").join("manifest.toml")) {
            Err(Error::Field { field, .. }) => assert_eq!(field, want, "{to}"),
            other => panic!("{to}: expected a field error on {want}, got {other:?}"),
        }
    }
}

#[test]
fn missing_onnx_file_names_the_file() {
    let text = replace_once(&lite3_text(), "onnx = \"policy.onnx\"", "onnx = \"missing.onnx\"");
    match load(fixture("lite3"), &text, 1) {
        Err(Error::Io { path, .. }) => assert!(path.ends_with("missing.onnx")),
        other => panic!("expected an I/O error, got {other:?}"),
    }
}

#[test]
fn a_deploy_convention_stated_wrong_names_its_field() {
    let conv =
        |name: &str| std::fs::read_to_string(model(&format!("conventions-test/{name}")).join("manifest.toml")).unwrap();
    let cases = [
        // A frame-major history needs every term equally deep: the first that is not is named.
        (
            "frame-major",
            "field = \"joint_vel\"\nhistory = 3",
            "field = \"joint_vel\"\nhistory = 2",
            "observation.terms[1].history",
        ),
        (
            "frame-major",
            "history_layout = \"frame_major\"",
            "history_layout = \"by_frame\"",
            "observation.history_layout",
        ),
        ("clip", "clip = [-0.3, 0.8]", "clip = [0.8, -0.3]", "observation.terms[1].clip"),
        ("clip", "clip_stage = \"raw\"", "clip_stage = \"before\"", "observation.terms[0].clip_stage"),
        ("clip", "clip_high = [0.5, 1.0, 1.5]", "clip_high = [0.5, 1.0]", "observation.terms[2].clip_high"),
        ("clip", "clip = [-0.3, 0.8]", "clip = 0.5\nclip_low = -1.0", "observation.terms[1].clip"),
        ("phase", "period_s = 0.8\n", "", "observation.terms[0].period_s"),
        ("phase", "reset_field = \"command\"", "reset_field = \"speed\"", "observation.terms[0].reset_field"),
        ("phase", "encoding = \"fraction\"", "encoding = \"degrees\"", "observation.terms[1].encoding"),
        ("phase", "values = [0.5, 1.2]", "values = []", "observation.terms[2].values"),
        (
            "phase",
            "field = \"command\"\nsize = 3",
            "field = \"command\"\nsize = 3\nperiod_s = 1.0",
            "observation.terms[3].period_s",
        ),
        ("last-action-clipped", "clip = [-1.0, 1.0]\n", "", "observation.last_action"),
        ("command", "timeout_s = 0.5", "timeout_s = -0.5", "observation.terms[0].timeout_s"),
        (
            "wheel",
            "modes = [\"position\", \"position\", \"velocity\"]",
            "modes = [\"position\", \"torque\"]",
            "action.modes",
        ),
        (
            "wheel",
            "modes = [\"position\", \"position\", \"velocity\"]",
            "modes = [\"position\", \"position\", \"torque\"]",
            "action.modes[2]",
        ),
        (
            "pipeline",
            "[\"@vision\", \"joint_pos\", \"command\"]",
            "[\"@vision\", \"joint_vel\"]",
            "io.observation_parts",
        ),
        (
            "pipeline",
            "[\"@vision\", \"joint_pos\", \"command\"]",
            "[\"@camera\", \"joint_pos\"]",
            "io.observation_parts",
        ),
        (
            "pipeline",
            "[\"@vision\", \"joint_pos\", \"command\"]",
            "[\"joint_pos\", \"joint_pos\"]",
            "io.observation_parts",
        ),
        ("pipeline", "[\"@vision\", \"joint_pos\", \"command\"]", "[\"joint_pos\", \"command\"]", "encoders[0].feeds"),
        ("pipeline", "parts = [\"image\", \"joint_pos\"]", "parts = [\"@vision\"]", "encoders[0].parts"),
        ("command", "timeout_s = 0.5\n", "", "observation.terms[0].timeout_s"),
        (
            "command",
            "field = \"joint_pos\"",
            "field = \"joint_pos\"\ntimeout_s = 0.5",
            "observation.terms[1].timeout_s",
        ),
    ];
    for (name, from, to, want) in cases {
        let text = replace_once(&conv(name), from, to);
        match Manifest::parse(&text, &model(&format!("conventions-test/{name}")).join("manifest.toml")) {
            Err(Error::Field { field, message, .. }) => assert_eq!(field, want, "{to}: {message}"),
            other => panic!("{name}: {to}: expected a field error on {want}, got {other:?}"),
        }
    }
}

#[test]
fn a_frame_major_history_whose_width_differs_from_the_graph_names_the_field_and_the_tensor() {
    let dir = model("conventions-test/frame-major");
    let text = replace_once(
        &std::fs::read_to_string(dir.join("manifest.toml")).unwrap(),
        "field = \"command\"\nsize = 3\nhistory = 3\nscale = [2.0, 2.0, 0.25]",
        "field = \"command\"\nsize = 2\nhistory = 3\nscale = 2.0",
    );
    let (field, tensor, message) = binding_error(load(dir, &text, 1));
    assert_eq!((field.as_str(), tensor.as_str()), ("io.observation", "obs"), "{message}");
    assert!(message.contains("24") && message.contains("27"), "{message}");
}

#[test]
fn a_part_list_whose_width_differs_from_the_graph_input_names_the_field_and_the_tensor() {
    let dir = model("conventions-test/pipeline");
    let text = std::fs::read_to_string(dir.join("manifest.toml")).unwrap();
    // The head's input without the command: 13 values for a graph input of 16.
    let head = replace_once(&text, "[\"@vision\", \"joint_pos\", \"command\"]", "[\"@vision\", \"joint_pos\"]");
    let (field, tensor, message) = binding_error(load(dir.clone(), &head, 1));
    assert_eq!((field.as_str(), tensor.as_str()), ("io.observation", "obs"), "{message}");
    assert!(message.contains("io.observation_parts width") && message.contains("10"), "{message}");
    // The encoder's input without the image: 6 values for a graph input of 22.
    let enc = replace_once(&text, "parts = [\"image\", \"joint_pos\"]", "parts = [\"joint_pos\"]");
    let (field, tensor, message) = binding_error(load(dir, &enc, 1));
    assert_eq!((field.as_str(), tensor.as_str()), ("encoders[0].input", "x"), "{message}");
    assert!(message.contains("the width of its parts") && message.contains('6'), "{message}");
}
