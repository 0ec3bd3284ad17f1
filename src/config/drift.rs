//! The `[drift]` table of a job file, validated: which method and threshold compare each
//! column. The drift module applies them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::schema::FeatureKind;

/// A drift method, as job files and reports name it (serde and strum spell it alike).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, strum::IntoStaticStr, strum::Display,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum Method {
    /// Two-sample Kolmogorov-Smirnov test (numeric); drift when p < threshold.
    Ks,
    /// Population stability index (numeric bins or categories); drift when PSI >= threshold.
    Psi,
    /// Wasserstein distance divided by the reference standard deviation (numeric); drift when
    /// the distance >= threshold.
    Wasserstein,
    /// Jensen-Shannon distance, base 2 (bins or categories); drift when >= threshold.
    Jensenshannon,
    /// Chi-square goodness of fit of current category counts to reference proportions; drift
    /// when p < threshold.
    Chisquare,
    /// Two-proportion Z-test (two-valued columns); drift when p < threshold.
    Ztest,
}

impl Method {
    pub const ALL: [Method; 6] = [
        Method::Ks,
        Method::Psi,
        Method::Wasserstein,
        Method::Jensenshannon,
        Method::Chisquare,
        Method::Ztest,
    ];

    /// The name job files and reports use.
    pub fn name(self) -> &'static str {
        self.into()
    }

    /// Whether the method is a test (compare the p-value) rather than a distance.
    pub fn is_test(self) -> bool {
        matches!(self, Method::Ks | Method::Chisquare | Method::Ztest)
    }

    pub fn default_threshold(self) -> f64 {
        if self.is_test() {
            0.05
        } else {
            0.1
        }
    }

    /// Whether the method can compare a column of this kind.
    pub fn supports(self, kind: FeatureKind) -> bool {
        match self {
            Method::Ks | Method::Wasserstein => kind == FeatureKind::Numeric,
            Method::Psi | Method::Jensenshannon | Method::Chisquare | Method::Ztest => true,
        }
    }
}

/// A method and threshold chosen in a job file; either may be left to the default.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct MethodChoice {
    pub method: Option<Method>,
    pub threshold: Option<f64>,
}

/// The `[drift]` table of a job, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct DriftSpec {
    pub enabled: bool,
    /// Dataset drift when at least this share of feature columns drifted.
    pub drift_share: f64,
    /// Fail the run when the data set drifted.
    pub fail_on_drift: bool,
    pub all: MethodChoice,
    pub numeric: MethodChoice,
    pub categorical: MethodChoice,
    pub columns: BTreeMap<String, MethodChoice>,
}

impl Default for DriftSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            drift_share: 0.5,
            fail_on_drift: false,
            all: MethodChoice::default(),
            numeric: MethodChoice::default(),
            categorical: MethodChoice::default(),
            columns: BTreeMap::new(),
        }
    }
}

impl DriftSpec {
    /// Per column, then per column type, then for all columns, then Evidently's default.
    pub(crate) fn choose(&self, column: &str, kind: FeatureKind, default: Method) -> (Method, f64) {
        let by_type = match kind {
            FeatureKind::Numeric => self.numeric,
            FeatureKind::Categorical => self.categorical,
        };
        let layers = [
            self.columns.get(column).copied().unwrap_or_default(),
            by_type,
            self.all,
        ];
        let method = layers
            .iter()
            .find_map(|l| l.method.filter(|m| m.supports(kind)))
            .unwrap_or(default);
        // A threshold belongs to the layer's method; a layer without one sets it for any.
        let threshold = layers
            .iter()
            .filter(|l| l.method.is_none_or(|m| m == method))
            .find_map(|l| l.threshold)
            .unwrap_or(method.default_threshold());
        (method, threshold)
    }
}
