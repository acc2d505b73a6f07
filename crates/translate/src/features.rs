//! The Gateway API features kgw implements: what every GatewayClass of ours reports in
//! `status.supportedFeatures`, and what the conformance runner claims. One list: a feature is
//! added here in the commit that makes its conformance tests pass.

/// Gateway API feature names (pkg/features in gateway-api), sorted ascending as the
/// GatewayClass status requires.
pub const SUPPORTED_FEATURES: &[&str] = &[
    "Gateway",
    // An IPAddress entry without a value gets the pool's address (gateway_addresses.rs).
    "GatewayAddressEmpty",
    // spec.tls.frontend (frontend_tls.rs): AllowValidOnly, and AllowInsecureFallback.
    "GatewayFrontendClientCertificateValidation",
    "GatewayFrontendClientCertificateValidationInsecureFallback",
    // A request is routed by its most specific listener only (listener_isolation.rs).
    "GatewayHTTPListenerIsolation",
    // 421 for a Host another HTTPS listener owns than the SNI's (snapshot misdirected.rs).
    "GatewayHTTPSListenerDetectMisdirectedRequests",
    "GatewayPort8080",
    // spec.addresses bound as given; other types UnsupportedAddress, an address the host
    // cannot bind AddressNotUsable (gateway_addresses.rs, listener_not_programmed).
    "GatewayStaticAddresses",
    "HTTPRoute",
    // RequestRedirect statusCode 303/307/308 (route_filters.rs in snapshot, translate, proxy).
    "HTTPRoute303RedirectStatusCode",
    "HTTPRoute307RedirectStatusCode",
    "HTTPRoute308RedirectStatusCode",
    // RequestHeaderModifier on a backendRef: its weighted cluster's request headers.
    // A Service port's appProtocol kubernetes.io/h2c makes its cluster HTTP/2 (app_protocol.rs);
    // kubernetes.io/ws enables WebSocket upgrades on the routes to it (upgrade.rs).
    "HTTPRouteBackendProtocolH2C",
    "HTTPRouteBackendProtocolWebSocket",
    "HTTPRouteBackendRequestHeaderModification",
    // timeouts.backendRequest: the route timeout (route_timeout.rs in snapshot, translate, proxy).
    "HTTPRouteBackendTimeout",
    // The CORS filter: preflights answered, allowed origins named (cors.rs, route_cors.rs).
    "HTTPRouteCORS",
    // A parentRef.port no listener has: Accepted=False NoMatchingParent (routes.rs attach).
    "HTTPRouteDestinationPortMatching",
    // URLRewrite hostname (route_filters.rs).
    "HTTPRouteHostRewrite",
    // Method matches; a rule's name is taken (routes.rs, router.rs).
    "HTTPRouteMethodMatching",
    "HTTPRouteNamedRouteRule",
    // parentRef.port picks the listeners of that port (routes.rs attach).
    "HTTPRouteParentRefPort",
    // RequestRedirect path; URLRewrite path; RequestRedirect port.
    "HTTPRoutePathRedirect",
    "HTTPRoutePathRewrite",
    "HTTPRoutePortRedirect",
    // Exact query parameter matches (route_query.rs, query_match.rs).
    "HTTPRouteQueryParamMatching",
    // RequestMirror: one, several, a share (route_mirror.rs in snapshot, translate; mirror.rs).
    "HTTPRouteRequestMirror",
    "HTTPRouteRequestMultipleMirrors",
    "HTTPRouteRequestPercentageMirror",
    // timeouts.request: the route timeout (route_timeout.rs).
    "HTTPRouteRequestTimeout",
    // ResponseHeaderModifier; RequestRedirect scheme.
    "HTTPRouteResponseHeaderModification",
    "HTTPRouteSchemeRedirect",
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
