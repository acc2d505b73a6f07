//! The Gateway API features kgw implements: what every GatewayClass of ours reports in
//! `status.supportedFeatures`, and what the conformance runner claims. One list: a feature is
//! added here in the commit that makes its conformance tests pass.

/// Gateway API feature names (pkg/features in gateway-api), sorted ascending as the
/// GatewayClass status requires.
pub const SUPPORTED_FEATURES: &[&str] = &[
    "Gateway",
    "HTTPRoute",
    // A parentRef.port no listener has: Accepted=False NoMatchingParent (routes.rs attach).
    "HTTPRouteDestinationPortMatching",
    "ReferenceGrant",
];

#[cfg(test)]
mod tests {
    use super::SUPPORTED_FEATURES;

    #[test]
    fn sorted_without_duplicates() {
        assert!(
            SUPPORTED_FEATURES.windows(2).all(|w| w[0] < w[1]),
            "SUPPORTED_FEATURES must be sorted ascending, each name once: {SUPPORTED_FEATURES:?}"
        );
    }
}
