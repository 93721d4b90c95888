//! `multipart/form-data` bodies as `lua-multipart` reads and writes them for Kong's
//! request-transformer: parts in order, each with its raw headers and value; a part added by
//! name gets only a `Content-Disposition`; written back with the request's boundary.

/// Most parts read from one body (more are refused, and the body is left as it was).
pub const MAX_PARTS: usize = 1000;

#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    pub name: Option<String>,
    /// The part's header lines, as received.
    pub headers: Vec<u8>,
    pub value: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Multipart {
    pub boundary: String,
    pub parts: Vec<Part>,
}

/// The boundary named by a `multipart/form-data` content type.
pub fn boundary(content_type: &str) -> Option<String> {
    content_type.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| v.trim().trim_matches('"').to_string())
            .filter(|b| !b.is_empty() && b.len() <= 200)
    })
}

/// Where `needle` next occurs in `hay` from `from`: linear in the body (the boundary is the
/// client's choice, so no search that multiplies by its length).
fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() || from > hay.len() {
        return None;
    }
    memchr::memmem::find(&hay[from..], needle).map(|i| i + from)
}

/// The `name` of a `Content-Disposition` header among `headers`.
fn disposition_name(headers: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(headers);
    let line = text
        .split("\r\n")
        .find(|l| l.to_ascii_lowercase().starts_with("content-disposition:"))?;
    line.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        (k.trim() == "name").then(|| v.trim().trim_matches('"').to_string())
    })
}

impl Multipart {
    /// Parses `body`; an empty body is no parts. `None` when it is not multipart with this
    /// boundary.
    pub fn parse(body: &[u8], boundary: &str) -> Option<Multipart> {
        let mut parts = Vec::new();
        let delim = format!("--{boundary}").into_bytes();
        if !body.is_empty() {
            let mut at = find(body, &delim, 0)? + delim.len();
            loop {
                if body[at..].starts_with(b"--") {
                    break;
                }
                let start = at + if body[at..].starts_with(b"\r\n") { 2 } else { 0 };
                let head_end = find(body, b"\r\n\r\n", start)?;
                let headers = body[start..head_end].to_vec();
                let value_start = head_end + 4;
                let mut next_delim = b"\r\n".to_vec();
                next_delim.extend_from_slice(&delim);
                let end = find(body, &next_delim, value_start)?;
                parts.push(Part {
                    name: disposition_name(&headers),
                    headers,
                    value: body[value_start..end].to_vec(),
                });
                if parts.len() > MAX_PARTS {
                    return None;
                }
                at = end + next_delim.len();
            }
        }
        Some(Multipart {
            boundary: boundary.to_string(),
            parts,
        })
    }

    pub fn get(&self, name: &str) -> Option<&Part> {
        self.parts.iter().find(|p| p.name.as_deref() == Some(name))
    }

    pub fn delete(&mut self, name: &str) {
        self.parts.retain(|p| p.name.as_deref() != Some(name));
    }

    /// `set_simple`: the value of an existing part, or a new part at the end.
    pub fn set_simple(&mut self, name: &str, value: &[u8]) {
        if let Some(p) = self
            .parts
            .iter_mut()
            .find(|p| p.name.as_deref() == Some(name))
        {
            p.value = value.to_vec();
            return;
        }
        self.parts.push(Part {
            name: Some(name.to_string()),
            headers: format!("Content-Disposition: form-data; name=\"{name}\"").into_bytes(),
            value: value.to_vec(),
        });
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for p in &self.parts {
            out.extend_from_slice(b"--");
            out.extend_from_slice(self.boundary.as_bytes());
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(&p.headers);
            out.extend_from_slice(b"\r\n\r\n");
            out.extend_from_slice(&p.value);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"--");
        out.extend_from_slice(self.boundary.as_bytes());
        out.extend_from_slice(b"--\r\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_edits() {
        let body = b"--b1\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nyes\r\n--b1\r\nContent-Disposition: form-data; name=\"b\"\r\n\r\nno\r\n--b1--\r\n";
        let mut m = Multipart::parse(body, "b1").unwrap();
        assert_eq!(m.to_bytes(), body.to_vec());
        m.delete("a");
        m.set_simple("c", b"v");
        assert_eq!(
            m.to_bytes(),
            b"--b1\r\nContent-Disposition: form-data; name=\"b\"\r\n\r\nno\r\n--b1\r\nContent-Disposition: form-data; name=\"c\"\r\n\r\nv\r\n--b1--\r\n".to_vec()
        );
        assert!(Multipart::parse(b"garbage", "b1").is_none());
        assert_eq!(Multipart::parse(b"", "b1").unwrap().parts.len(), 0);
        assert_eq!(boundary("multipart/form-data; boundary=xyz").as_deref(), Some("xyz"));
    }
}
