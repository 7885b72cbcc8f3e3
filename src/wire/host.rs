//! The Host of an HTTP/1.x request at the start of a TCP stream (RFC 9112 section 3.2).

/// What the first bytes of a stream say about its HTTP Host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostResult<'a> {
    /// The host name (port and brackets removed), borrowed from the stream.
    Host(&'a [u8]),
    /// A complete request head without Host.
    NoHost,
    /// The request head is not complete yet.
    NeedMore,
    /// The stream does not start with an HTTP/1.x request line.
    NotHttp,
}

/// Reads the Host of the request head that starts `stream` (zero allocation: `httparse`).
pub fn request_host(stream: &[u8]) -> HostResult<'_> {
    // A request starts with a method token: upper-case letters (GET, POST, CONNECT, ...).
    match stream.first() {
        None => return HostResult::NeedMore,
        Some(b) if !b.is_ascii_uppercase() => return HostResult::NotHttp,
        _ => {}
    }
    let mut headers = [httparse::EMPTY_HEADER; 48];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(stream) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return HostResult::NeedMore,
        Err(_) => return HostResult::NotHttp,
    }
    if let Some(h) = req
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("host"))
    {
        return strip_port(h.value.trim_ascii()).map_or(HostResult::NoHost, HostResult::Host);
    }
    // Absolute-form target: "http://host:port/path".
    if let Some(rest) = req.path.and_then(|p| p.strip_prefix("http://")) {
        let authority = rest.split('/').next().unwrap_or("");
        let authority = authority.rsplit('@').next().unwrap_or("");
        // The path borrows from `stream`: find the same bytes there.
        if let Some(h) = strip_port(authority.as_bytes()) {
            if let Some(at) = find(stream, h) {
                return HostResult::Host(&stream[at..at + h.len()]);
            }
        }
    }
    HostResult::NoHost
}

fn strip_port(v: &[u8]) -> Option<&[u8]> {
    let host = if let Some(rest) = v.strip_prefix(b"[") {
        &rest[..rest.iter().position(|&c| c == b']')?]
    } else {
        match v.iter().rposition(|&c| c == b':') {
            Some(i) => &v[..i],
            None => v,
        }
    };
    (!host.is_empty()).then_some(host)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_header_with_port_and_case() {
        let r =
            request_host(b"GET / HTTP/1.1\r\nUser-Agent: x\r\nHOST: Allowed.Example:8080\r\n\r\n");
        assert_eq!(r, HostResult::Host(b"Allowed.Example"));
    }

    #[test]
    fn partial_absent_and_not_http() {
        assert_eq!(
            request_host(b"GET / HTTP/1.1\r\nHost: a"),
            HostResult::NeedMore
        );
        assert_eq!(request_host(b"GET / HTTP/1.0\r\n\r\n"), HostResult::NoHost);
        assert_eq!(request_host(b"\x16\x03\x01"), HostResult::NotHttp);
        assert_eq!(request_host(b"SSH-2.0-x\r\n"), HostResult::NotHttp);
        assert_eq!(
            request_host(b"GET http://proxy.example:80/x HTTP/1.1\r\n\r\n"),
            HostResult::Host(b"proxy.example")
        );
    }
}
