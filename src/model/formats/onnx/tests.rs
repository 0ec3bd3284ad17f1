//! Unit tests: small graphs built here, with values worked out from onnxruntime's kernels, and
//! forged files that must be refused with an error, never a panic. (The comparison with
//! onnxruntime itself, over skl2onnx and onnxmltools models, is in the fixtures' tests.)

use super::proto::*;
use super::*;

fn attr_f(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::FLOAT,
        f: v,
        ..Default::default()
    }
}
fn attr_i(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::INT,
        i: v,
        ..Default::default()
    }
}
fn attr_s(name: &str, v: &str) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::STRING,
        s: v.as_bytes().to_vec(),
        ..Default::default()
    }
}
fn attr_fs(name: &str, v: &[f32]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::FLOATS,
        floats: v.to_vec(),
        ..Default::default()
    }
}
fn attr_is(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::INTS,
        ints: v.to_vec(),
        ..Default::default()
    }
}
fn attr_ss(name: &str, v: &[&str]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::STRINGS,
        strings: v.iter().map(|s| s.as_bytes().to_vec()).collect(),
        ..Default::default()
    }
}

fn node(
    op: &str,
    domain: &str,
    inputs: &[&str],
    outputs: &[&str],
    attribute: Vec<AttributeProto>,
) -> NodeProto {
    NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        name: format!("{op}_1"),
        op_type: op.into(),
        domain: domain.into(),
        attribute,
    }
}

fn tensor_info(name: &str, elem: i32, dims: &[Option<i64>]) -> ValueInfoProto {
    use tensor_shape_proto::{dimension::Value as D, Dimension};
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: elem,
                shape: Some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|d| Dimension {
                            value: Some(match d {
                                Some(v) => D::DimValue(*v),
                                None => D::DimParam("N".into()),
                            }),
                        })
                        .collect(),
                }),
            })),
        }),
    }
}

fn model(
    nodes: Vec<NodeProto>,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
    init: Vec<TensorProto>,
) -> Vec<u8> {
    ModelProto {
        ir_version: 8,
        opset_import: vec![
            OperatorSetIdProto {
                domain: "".into(),
                version: 17,
            },
            OperatorSetIdProto {
                domain: "ai.onnx.ml".into(),
                version: 3,
            },
        ],
        producer_name: "skl2onnx".into(),
        producer_version: "1.20.0".into(),
        graph: Some(GraphProto {
            node: nodes,
            name: "g".into(),
            initializer: init,
            input: inputs,
            output: outputs,
        }),
        metadata_props: vec![],
    }
    .encode_to_vec()
}

const F: i32 = data_type::FLOAT;

/// a, b (float columns) -> Concat -> Imputer -> Scaler -> LinearClassifier (two rows, LOGISTIC).
fn linear_pipeline() -> Vec<u8> {
    model(
        vec![
            node("Concat", "", &["a", "b"], &["x"], vec![attr_i("axis", 1)]),
            node(
                "Imputer",
                "ai.onnx.ml",
                &["x"],
                &["xi"],
                vec![
                    attr_fs("imputed_value_floats", &[1.0, 2.0]),
                    attr_f("replaced_value_float", f32::NAN),
                ],
            ),
            node(
                "Scaler",
                "ai.onnx.ml",
                &["xi"],
                &["xs"],
                vec![
                    attr_fs("offset", &[1.0, 0.0]),
                    attr_fs("scale", &[2.0, 0.5]),
                ],
            ),
            node(
                "LinearClassifier",
                "ai.onnx.ml",
                &["xs"],
                &["label", "prob"],
                vec![
                    attr_fs("coefficients", &[-1.0, -0.5, 1.0, 0.5]),
                    attr_fs("intercepts", &[-0.25, 0.25]),
                    attr_is("classlabels_ints", &[0, 1]),
                    attr_s("post_transform", "LOGISTIC"),
                ],
            ),
        ],
        vec![
            tensor_info("a", F, &[None, Some(1)]),
            tensor_info("b", F, &[None, Some(1)]),
        ],
        vec![
            tensor_info("label", data_type::INT64, &[None]),
            tensor_info("prob", F, &[None, Some(2)]),
        ],
        vec![],
    )
}

#[test]
fn linear_pipeline_imputes_scales_and_scores_as_onnxruntime() {
    let p = parse(&linear_pipeline(), None).unwrap();
    assert_eq!(p.producer.as_deref(), Some("skl2onnx 1.20.0"));
    assert_eq!(p.objective, "LinearClassifier post_transform=LOGISTIC");
    assert_eq!(
        p.task,
        Task::Classification {
            labels: vec![Label::Int(0), Label::Int(1)]
        }
    );
    assert_eq!(
        p.features
            .iter()
            .map(|f| f.name.as_str())
            .collect::<Vec<_>>(),
        ["a", "b"]
    );
    let cols = [
        InputColumn::Numbers(vec![3.0, f64::NAN]),
        InputColumn::Numbers(vec![f64::NAN, 4.0]),
    ];
    let got = p.predict(&cols, 2);
    // Row 0: (3 - 1) * 2 = 4, NaN -> 2 -> 1: s1 = 4 + 0.5 + 0.25. Row 1: NaN -> 1 -> 0, 4 * 0.5 = 2.
    for (r, s1) in [
        (0, 4.75f32),
        (1, 0.0f32.mul_add(1.0, 2.0f32.mul_add(0.5, 0.0)) + 0.25),
    ] {
        let want = ops::mlas_logistic(s1);
        assert_eq!(got[r * 2 + 1], want as f64);
        assert_eq!(got[r * 2], ops::mlas_logistic(-s1) as f64);
    }
}

/// One tree over one feature: `x <mode> 0.5` (missing goes true when `nan_true`), leaves 1 / 2.
fn one_split(mode: &str, nan_true: i64, classifier: bool) -> Vec<u8> {
    let p = if classifier { "class" } else { "target" };
    let mut attrs = vec![
        attr_is("nodes_treeids", &[0, 0, 0]),
        attr_is("nodes_nodeids", &[0, 1, 2]),
        attr_is("nodes_featureids", &[0, 0, 0]),
        attr_ss("nodes_modes", &[mode, "LEAF", "LEAF"]),
        attr_fs("nodes_values", &[0.5, 0.0, 0.0]),
        attr_is("nodes_truenodeids", &[1, 0, 0]),
        attr_is("nodes_falsenodeids", &[2, 0, 0]),
        attr_is("nodes_missing_value_tracks_true", &[nan_true, 0, 0]),
        attr_is(&format!("{p}_treeids"), &[0, 0]),
        attr_is(&format!("{p}_nodeids"), &[1, 2]),
        attr_is(&format!("{p}_ids"), &[0, 0]),
        attr_fs(&format!("{p}_weights"), &[1.0, 2.0]),
    ];
    let (op, outputs) = if classifier {
        attrs.push(attr_is("classlabels_int64s", &[0, 1]));
        attrs.push(attr_fs("base_values", &[-1.5]));
        attrs.push(attr_s("post_transform", "LOGISTIC"));
        (
            "TreeEnsembleClassifier",
            vec![
                tensor_info("l", data_type::INT64, &[None]),
                tensor_info("y", F, &[None, Some(2)]),
            ],
        )
    } else {
        attrs.push(attr_i("n_targets", 1));
        (
            "TreeEnsembleRegressor",
            vec![tensor_info("y", F, &[None, Some(1)])],
        )
    };
    let outs: &[&str] = if classifier { &["l", "y"] } else { &["y"] };
    model(
        vec![node(op, "ai.onnx.ml", &["x"], outs, attrs)],
        vec![tensor_info("x", F, &[None, Some(1)])],
        outputs,
        vec![],
    )
}

#[test]
fn branch_modes_and_missing_values_follow_onnxruntime() {
    let xs = [0.25, 0.5, 0.75, f64::NAN];
    let col = [InputColumn::Numbers(xs.to_vec())];
    for (mode, nan_true, want) in [
        ("BRANCH_LEQ", 0, [1.0, 1.0, 2.0, 2.0]),
        ("BRANCH_LEQ", 1, [1.0, 1.0, 2.0, 1.0]),
        ("BRANCH_LT", 0, [1.0, 2.0, 2.0, 2.0]),
        ("BRANCH_GTE", 0, [2.0, 1.0, 1.0, 2.0]),
        ("BRANCH_GT", 1, [2.0, 2.0, 1.0, 1.0]),
        ("BRANCH_EQ", 0, [2.0, 1.0, 2.0, 2.0]),
        ("BRANCH_NEQ", 0, [1.0, 2.0, 1.0, 1.0]),
    ] {
        let p = parse(&one_split(mode, nan_true, false), Some(&["x".to_string()])).unwrap();
        assert_eq!(p.predict(&col, 4), want, "{mode} {nan_true}");
    }
}

#[test]
fn binary_classifier_with_one_score_column_is_expanded_as_onnxruntime_does() {
    let p = parse(&one_split("BRANCH_LEQ", 0, true), None).unwrap();
    let got = p.predict(&[InputColumn::Numbers(vec![0.25, 0.75])], 2);
    // Mixed-sign scores: [logistic(-s), logistic(s)] with s = leaf + base.
    for (r, s) in [(0, -0.5f32), (1, 0.5f32)] {
        assert_eq!(got[r * 2], trees::logistic(-s) as f64);
        assert_eq!(got[r * 2 + 1], trees::logistic(s) as f64);
    }
}

#[test]
fn refusals_name_the_problem() {
    let err = |bytes: &[u8], f: Option<&[String]>| format!("{:#}", parse(bytes, f).unwrap_err());
    // An unsupported operator: its type, its node's name, the supported list.
    let m = model(
        vec![node("Softplus", "", &["x"], &["y"], vec![])],
        vec![tensor_info("x", F, &[None, Some(1)])],
        vec![tensor_info("y", F, &[None, Some(1)])],
        vec![],
    );
    let e = err(&m, None);
    assert!(
        e.contains("Softplus") && e.contains("Softplus_1") && e.contains("ai.onnx.ml:Scaler"),
        "{e}"
    );
    // A [N, 3] tensor needs three names.
    let wide = model(
        vec![node("Identity", "", &["x"], &["y"], vec![])],
        vec![tensor_info("x", F, &[None, Some(3)])],
        vec![tensor_info("y", F, &[None, Some(3)])],
        vec![],
    );
    assert!(err(&wide, None).contains("--features"));
    let two = ["a".to_string(), "b".to_string()];
    assert!(err(&wide, Some(&two)).contains("the model takes 3 features; --features names 2"));
    // External data.
    let ext = model(
        vec![node("Mul", "", &["x", "k"], &["y"], vec![])],
        vec![tensor_info("x", F, &[None, Some(1)])],
        vec![tensor_info("y", F, &[None, Some(1)])],
        vec![TensorProto {
            name: "k".into(),
            data_type: F,
            dims: vec![1],
            data_location: DATA_LOCATION_EXTERNAL,
            ..Default::default()
        }],
    );
    assert!(err(&ext, None).contains("external file"));
    // A dims product that the data does not fill.
    let short = model(
        vec![node("Mul", "", &["x", "k"], &["y"], vec![])],
        vec![tensor_info("x", F, &[None, Some(1)])],
        vec![tensor_info("y", F, &[None, Some(1)])],
        vec![TensorProto {
            name: "k".into(),
            data_type: F,
            dims: vec![1 << 40, 1 << 40],
            float_data: vec![1.0],
            ..Default::default()
        }],
    );
    assert!(
        err(&short, None).contains("values for dimensions")
            || err(&short, None).contains("overflow")
    );
    // Not protobuf at all.
    assert!(err(b"tree\nversion=v4", None).contains("not a readable ONNX model"));
}

#[test]
fn a_tree_cycle_or_a_feature_out_of_range_is_refused() {
    let mut m = ModelProto::decode(one_split("BRANCH_LEQ", 0, false).as_slice()).unwrap();
    let g = m.graph.as_mut().unwrap();
    let attrs = &mut g.node[0].attribute;
    let set = |attrs: &mut Vec<AttributeProto>, a: AttributeProto| {
        let i = attrs.iter().position(|x| x.name == a.name).unwrap();
        attrs[i] = a;
    };
    let mut cyc = attrs.clone();
    set(
        &mut cyc,
        attr_ss("nodes_modes", &["BRANCH_LEQ", "BRANCH_LEQ", "LEAF"]),
    );
    set(&mut cyc, attr_is("nodes_truenodeids", &[1, 0, 0]));
    set(&mut cyc, attr_is("nodes_falsenodeids", &[2, 2, 0]));
    g.node[0].attribute = cyc;
    assert!(parse(&m.encode_to_vec(), None).is_err());
    let mut m = ModelProto::decode(one_split("BRANCH_LEQ", 0, false).as_slice()).unwrap();
    let attrs = &mut m.graph.as_mut().unwrap().node[0].attribute;
    set(attrs, attr_is("nodes_featureids", &[3, 0, 0]));
    assert!(format!("{:#}", parse(&m.encode_to_vec(), None).unwrap_err()).contains("feature 3"));
}

/// Every truncation and many single-byte corruptions of valid files: an error or a model that
/// scores, never a panic.
#[test]
fn corrupt_files_never_panic() {
    let files = [
        linear_pipeline(),
        one_split("BRANCH_GT", 1, true),
        one_split("BRANCH_EQ", 0, false),
    ];
    let cols2 = [
        InputColumn::Numbers(vec![1.0, f64::NAN]),
        InputColumn::Text(vec![None, Some("x".into())]),
    ];
    for bytes in &files {
        let mut variants: Vec<Vec<u8>> = (0..bytes.len()).map(|n| bytes[..n].to_vec()).collect();
        for i in 0..bytes.len() {
            for v in [0u8, 1, 0x7f, 0x80, 0xff] {
                let mut b = bytes.clone();
                b[i] = v;
                variants.push(b);
            }
        }
        for b in variants {
            if let Ok(p) =
                parse(&b, Some(&["a".to_string(), "b".to_string()])).or_else(|_| parse(&b, None))
            {
                let _ = p.predict(&cols2, 2);
                let _ = p.predict(&[], 3);
            }
        }
    }
}

#[test]
fn pipeline_round_trips_through_serde() {
    let p = parse(&linear_pipeline(), None).unwrap();
    let json = serde_json::to_string(&p).unwrap();
    let back: Parsed = serde_json::from_str(&json).unwrap();
    assert_eq!(back, p);
}

/// Found in review: `n_targets` sized every leaf's values before anything bounded it, so a
/// forged count aborted the process on allocation. It is refused in one line now.
#[test]
fn a_forged_target_count_is_refused_before_any_allocation() {
    let honest = one_split("BRANCH_LEQ", 0, false);
    let model = ModelProto::decode(honest.as_slice()).unwrap();
    for forged in [1i64 << 40, i64::MAX, 1 << 20] {
        let mut m = model.clone();
        let graph = m.graph.as_mut().unwrap();
        for a in &mut graph.node[0].attribute {
            if a.name == "n_targets" {
                a.i = forged;
            }
        }
        let err = format!(
            "{:#}",
            parse(&m.encode_to_vec(), Some(&["x".to_string()])).unwrap_err()
        );
        assert!(!err.contains('\n'), "{err}");
        assert!(
            err.contains("outputs") || err.contains("n_targets"),
            "{err}"
        );
    }
}
