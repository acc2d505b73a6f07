//! What curl printed with `-D -` (the response head, then the body), read back as a status,
//! header lines and a body: the one parser for the tests that drive curl over HTTP/1.1 and
//! HTTP/2 and look at response headers.

pub struct CurlReply {
    /// 0 when curl printed no status line (the request failed).
    pub status: u16,
    /// Response header lines in order, names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl CurlReply {
    pub fn parse(stdout: &[u8]) -> CurlReply {
        let text = String::from_utf8_lossy(stdout).to_string();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        CurlReply {
            status,
            headers,
            body: body.to_string(),
        }
    }

    /// The first value of the header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of the header `name` (lower case), in order.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}
