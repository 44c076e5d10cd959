//! A small OpenPGP (RFC 4880) reader for GPG "simple signing": enough to
//! verify the signed messages `skopeo copy --sign-by` writes (a possibly
//! compressed one-pass-signature + literal data + v4 signature) against
//! keyrings exported by `gpg --export [--armor]`.
//!
//! Written here instead of taking a full OpenPGP crate (dozens of
//! dependencies, and a newer compiler than the workspace's) because the
//! guest needs one narrow operation. Supported: v4 RSA, EdDSA (Ed25519)
//! and ECDSA P-256/P-384 keys and subkeys; SHA-256/384/512 (SHA-1 and MD5
//! are refused); ZIP and ZLIB compression. Key expiry and revocation
//! signatures are not evaluated: the policy's keyring is the trust root.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use sha2::Digest as _;

/// Largest decompressed message (1 MiB): payloads are small.
const MAX_MESSAGE: u64 = 1 << 20;

/// One public key (primary or subkey) of a keyring.
#[derive(Clone)]
pub struct GpgKey {
    /// V4 fingerprint (SHA-1 of the key packet), uppercase hex.
    pub fingerprint: String,
    key: KeyMaterial,
}

impl std::fmt::Debug for GpgKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GpgKey({})", self.fingerprint)
    }
}

#[derive(Clone)]
enum KeyMaterial {
    Rsa(rsa::RsaPublicKey),
    Ed25519(ed25519_dalek::VerifyingKey),
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
    Unsupported(u8),
}

/// A verified message: the signed content and who signed it.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The literal data (the simple signing payload).
    pub content: Vec<u8>,
    /// Fingerprint of the key that made the signature.
    pub signer: String,
}

struct Packet<'a> {
    tag: u8,
    body: std::borrow::Cow<'a, [u8]>,
}

fn read_len(b: &[u8], i: &mut usize) -> Result<(usize, bool), String> {
    let o1 = *b.get(*i).ok_or("truncated length")? as usize;
    *i += 1;
    Ok(match o1 {
        0..=191 => (o1, false),
        192..=223 => {
            let o2 = *b.get(*i).ok_or("truncated length")? as usize;
            *i += 1;
            (((o1 - 192) << 8) + o2 + 192, false)
        }
        224..=254 => (1usize << (o1 & 0x1f), true),
        _ => {
            let s = b.get(*i..*i + 4).ok_or("truncated length")?;
            *i += 4;
            (u32::from_be_bytes([s[0], s[1], s[2], s[3]]) as usize, false)
        }
    })
}

fn packets(b: &[u8]) -> Result<Vec<Packet<'_>>, String> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let h = b[i];
        i += 1;
        if h & 0x80 == 0 {
            return Err("not an OpenPGP packet".into());
        }
        if h & 0x40 == 0 {
            // Old format.
            let tag = (h >> 2) & 0x0f;
            let len = match h & 3 {
                0 => {
                    let l = *b.get(i).ok_or("truncated")? as usize;
                    i += 1;
                    l
                }
                1 => {
                    let s = b.get(i..i + 2).ok_or("truncated")?;
                    i += 2;
                    u16::from_be_bytes([s[0], s[1]]) as usize
                }
                2 => {
                    let s = b.get(i..i + 4).ok_or("truncated")?;
                    i += 4;
                    u32::from_be_bytes([s[0], s[1], s[2], s[3]]) as usize
                }
                _ => b.len() - i,
            };
            let body = b
                .get(i..i.checked_add(len).ok_or("bad length")?)
                .ok_or("truncated packet")?;
            i += len;
            out.push(Packet {
                tag,
                body: body.into(),
            });
        } else {
            let tag = h & 0x3f;
            let (mut len, mut partial) = read_len(b, &mut i)?;
            if !partial {
                let body = b
                    .get(i..i.checked_add(len).ok_or("bad length")?)
                    .ok_or("truncated packet")?;
                i += len;
                out.push(Packet {
                    tag,
                    body: body.into(),
                });
                continue;
            }
            let mut body = Vec::new();
            loop {
                let chunk = b
                    .get(i..i.checked_add(len).ok_or("bad length")?)
                    .ok_or("truncated packet")?;
                if body.len() + chunk.len() > MAX_MESSAGE as usize {
                    return Err("packet too large".into());
                }
                body.extend_from_slice(chunk);
                i += len;
                if !partial {
                    break;
                }
                (len, partial) = read_len(b, &mut i)?;
            }
            out.push(Packet {
                tag,
                body: body.into(),
            });
        }
    }
    Ok(out)
}

fn mpi<'a>(b: &'a [u8], i: &mut usize) -> Result<&'a [u8], String> {
    let s = b.get(*i..*i + 2).ok_or("truncated MPI")?;
    let bits = u16::from_be_bytes([s[0], s[1]]) as usize;
    *i += 2;
    let n = bits.div_ceil(8);
    let v = b.get(*i..*i + n).ok_or("truncated MPI")?;
    *i += n;
    Ok(v)
}

fn left_pad(v: &[u8], n: usize) -> Result<Vec<u8>, String> {
    if v.len() > n {
        return Err("integer too long".into());
    }
    let mut out = vec![0u8; n - v.len()];
    out.extend_from_slice(v);
    Ok(out)
}

/// The (r, s) pair of an EdDSA or ECDSA signature packet as `r || s`, each
/// left-padded to `width` bytes (the fixed form the verifying crates take).
fn r_s_fixed(mpis: &[Vec<u8>], width: usize) -> Result<Vec<u8>, String> {
    let (r, s) = (mpis.first().ok_or("no r")?, mpis.get(1).ok_or("no s")?);
    let mut raw = left_pad(r, width)?;
    raw.extend(left_pad(s, width)?);
    Ok(raw)
}

const OID_ED25519: &[u8] = &[0x2b, 0x06, 0x01, 0x04, 0x01, 0xda, 0x47, 0x0f, 0x01];
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];

fn parse_key(body: &[u8]) -> Result<GpgKey, String> {
    if body.first() != Some(&4) {
        return Err(format!("key packet version {:?} is not 4", body.first()));
    }
    let algo = *body.get(5).ok_or("truncated key")?;
    let mut i = 6;
    let key = match algo {
        1 | 3 => {
            let n = mpi(body, &mut i)?;
            let e = mpi(body, &mut i)?;
            KeyMaterial::Rsa(
                rsa::RsaPublicKey::new(
                    rsa::BigUint::from_bytes_be(n),
                    rsa::BigUint::from_bytes_be(e),
                )
                .map_err(|e| format!("bad RSA key: {e}"))?,
            )
        }
        19 | 22 => {
            let l = *body.get(i).ok_or("truncated key")? as usize;
            let oid = body.get(i + 1..i + 1 + l).ok_or("truncated key")?;
            i += 1 + l;
            let point = mpi(body, &mut i)?;
            match (algo, oid) {
                (22, OID_ED25519) => {
                    let p = point
                        .strip_prefix(&[0x40])
                        .ok_or("Ed25519 point without 0x40 prefix")?;
                    let p: [u8; 32] = p.try_into().map_err(|_| "bad Ed25519 point")?;
                    KeyMaterial::Ed25519(
                        ed25519_dalek::VerifyingKey::from_bytes(&p)
                            .map_err(|_| "bad Ed25519 key")?,
                    )
                }
                (19, OID_P256) => KeyMaterial::P256(
                    p256::ecdsa::VerifyingKey::from_sec1_bytes(point)
                        .map_err(|_| "bad P-256 key")?,
                ),
                (19, OID_P384) => KeyMaterial::P384(
                    p384::ecdsa::VerifyingKey::from_sec1_bytes(point)
                        .map_err(|_| "bad P-384 key")?,
                ),
                _ => KeyMaterial::Unsupported(algo),
            }
        }
        other => KeyMaterial::Unsupported(other),
    };
    let mut h = sha1::Sha1::new();
    h.update([0x99]);
    h.update((body.len() as u16).to_be_bytes());
    h.update(body);
    Ok(GpgKey {
        fingerprint: hex::encode_upper(h.finalize()),
        key,
    })
}

/// Removes ASCII armor if present (binary input is returned as is).
pub fn dearmor(data: &[u8]) -> Result<Vec<u8>, String> {
    let Ok(text) = std::str::from_utf8(data) else {
        return Ok(data.to_vec());
    };
    let Some(start) = text.find("-----BEGIN PGP ") else {
        return Ok(data.to_vec());
    };
    let mut lines = text[start..].lines().skip(1);
    // Armor headers end at the first empty line.
    let mut b64 = String::new();
    let mut in_headers = true;
    for l in lines.by_ref() {
        let l = l.trim_end();
        if in_headers {
            if l.is_empty() {
                in_headers = false;
            } else if !l.contains(": ") {
                in_headers = false;
                b64.push_str(l);
            }
            continue;
        }
        if l.starts_with("-----END") || (l.starts_with('=') && l.len() == 5) {
            break;
        }
        b64.push_str(l.trim());
    }
    STANDARD
        .decode(b64.as_bytes())
        .map_err(|_| "bad base64 in the ASCII armor".to_string())
}

/// Reads every public key and subkey of a keyring (armored or binary).
pub fn parse_keyring(data: &[u8]) -> Result<Vec<GpgKey>, String> {
    let bin = dearmor(data)?;
    let mut keys = Vec::new();
    for p in packets(&bin)? {
        if p.tag == 6 || p.tag == 14 {
            keys.push(parse_key(&p.body)?);
        }
    }
    if keys.is_empty() {
        return Err("no public key in the keyring (export it with gpg --export)".into());
    }
    Ok(keys)
}

fn subpackets(mut b: &[u8], mut f: impl FnMut(u8, &[u8])) -> Result<(), String> {
    while !b.is_empty() {
        let mut i = 0;
        let (len, partial) = read_len(b, &mut i)?;
        if partial || len == 0 {
            return Err("bad subpacket length".into());
        }
        let sp = b.get(i..i + len).ok_or("truncated subpacket")?;
        f(sp[0] & 0x7f, &sp[1..]);
        b = &b[i + len..];
    }
    Ok(())
}

struct Sig {
    sig_type: u8,
    pk_algo: u8,
    hash_algo: u8,
    hashed: Vec<u8>,
    issuer_fpr: Option<String>,
    issuer_id: Option<String>,
    mpis: Vec<Vec<u8>>,
    left16: [u8; 2],
}

fn parse_sig(b: &[u8]) -> Result<Sig, String> {
    if b.first() != Some(&4) {
        return Err(format!("signature version {:?} is not 4", b.first()));
    }
    let g = |r: std::ops::Range<usize>| b.get(r).ok_or("truncated signature");
    let hl = u16::from_be_bytes(g(4..6)?.try_into().map_err(|_| "x")?) as usize;
    let hashed_area = g(6..6 + hl)?;
    let hashed = g(0..6 + hl)?.to_vec();
    let mut i = 6 + hl;
    let ul = u16::from_be_bytes(g(i..i + 2)?.try_into().map_err(|_| "x")?) as usize;
    let unhashed = g(i + 2..i + 2 + ul)?;
    i += 2 + ul;
    let left16 = [
        *g(i..i + 1)?.first().ok_or("x")?,
        *g(i + 1..i + 2)?.first().ok_or("x")?,
    ];
    i += 2;
    let (mut fpr, mut id) = (None, None);
    let mut visit = |t: u8, d: &[u8]| match t {
        16 if d.len() == 8 => id = Some(hex::encode_upper(d)),
        33 if d.len() == 21 && d[0] == 4 => fpr = Some(hex::encode_upper(&d[1..])),
        _ => {}
    };
    subpackets(hashed_area, &mut visit)?;
    subpackets(unhashed, &mut visit)?;
    let mut mpis = Vec::new();
    while i < b.len() && mpis.len() < 2 {
        mpis.push(mpi(b, &mut i)?.to_vec());
    }
    Ok(Sig {
        sig_type: b[1],
        pk_algo: b[2],
        hash_algo: b[3],
        hashed,
        issuer_fpr: fpr,
        issuer_id: id,
        mpis,
        left16,
    })
}

fn hash(algo: u8, parts: &[&[u8]]) -> Result<(Vec<u8>, &'static str), String> {
    fn run<D: sha2::Digest>(parts: &[&[u8]]) -> Vec<u8> {
        let mut h = D::new();
        for p in parts {
            h.update(p);
        }
        h.finalize().to_vec()
    }
    Ok(match algo {
        8 => (run::<sha2::Sha256>(parts), "SHA-256"),
        9 => (run::<sha2::Sha384>(parts), "SHA-384"),
        10 => (run::<sha2::Sha512>(parts), "SHA-512"),
        11 => (run::<sha2::Sha224>(parts), "SHA-224"),
        1..=3 => {
            return Err(format!(
                "hash algorithm {algo} (MD5/SHA-1/RIPEMD) is too weak"
            ))
        }
        other => return Err(format!("unknown hash algorithm {other}")),
    })
}

fn verify_with(k: &GpgKey, s: &Sig, digest: &[u8]) -> Result<(), String> {
    use p256::ecdsa::signature::hazmat::PrehashVerifier;
    let bad = || "the signature does not verify".to_string();
    match (&k.key, s.pk_algo) {
        (KeyMaterial::Rsa(pk), 1 | 3) => {
            use rsa::traits::PublicKeyParts;
            let m = s.mpis.first().ok_or("no RSA signature value")?;
            let sig = left_pad(m, pk.size())?;
            let scheme = match s.hash_algo {
                8 => rsa::Pkcs1v15Sign::new::<sha2::Sha256>(),
                9 => rsa::Pkcs1v15Sign::new::<sha2::Sha384>(),
                10 => rsa::Pkcs1v15Sign::new::<sha2::Sha512>(),
                11 => rsa::Pkcs1v15Sign::new::<sha2::Sha224>(),
                _ => return Err("unsupported hash".into()),
            };
            pk.verify(scheme, digest, &sig).map_err(|_| bad())
        }
        (KeyMaterial::Ed25519(pk), 22) => {
            let raw = r_s_fixed(&s.mpis, 32)?;
            let sig = ed25519_dalek::Signature::from_slice(&raw).map_err(|_| bad())?;
            pk.verify_strict(digest, &sig).map_err(|_| bad())
        }
        (KeyMaterial::P256(pk), 19) => {
            let raw = r_s_fixed(&s.mpis, 32)?;
            let sig = p256::ecdsa::Signature::from_slice(&raw).map_err(|_| bad())?;
            pk.verify_prehash(digest, &sig).map_err(|_| bad())
        }
        (KeyMaterial::P384(pk), 19) => {
            let raw = r_s_fixed(&s.mpis, 48)?;
            let sig = p384::ecdsa::Signature::from_slice(&raw).map_err(|_| bad())?;
            pk.verify_prehash(digest, &sig).map_err(|_| bad())
        }
        (KeyMaterial::Unsupported(a), _) => Err(format!("key algorithm {a} is not supported")),
        _ => Err("signature and key algorithms differ".into()),
    }
}

fn decompress(body: &[u8]) -> Result<Vec<u8>, String> {
    use std::io::Read as _;
    let algo = *body.first().ok_or("empty compressed packet")?;
    let data = &body[1..];
    let mut out = Vec::new();
    let res = match algo {
        0 => {
            out.extend_from_slice(data);
            Ok(0)
        }
        1 => flate2::read::DeflateDecoder::new(data)
            .take(MAX_MESSAGE + 1)
            .read_to_end(&mut out),
        2 => flate2::read::ZlibDecoder::new(data)
            .take(MAX_MESSAGE + 1)
            .read_to_end(&mut out),
        other => {
            return Err(format!(
                "compression algorithm {other} is not supported (ZIP, ZLIB)"
            ))
        }
    };
    res.map_err(|e| format!("decompressing: {e}"))?;
    if out.len() as u64 > MAX_MESSAGE {
        return Err("the decompressed message is too large".into());
    }
    Ok(out)
}

/// Verifies a signed message against `keys`; returns its content and signer.
pub fn verify_message(message: &[u8], keys: &[GpgKey]) -> Result<Verified, String> {
    let bin = dearmor(message)?;
    let mut pk = packets(&bin)?;
    let mut depth = 0;
    while pk.len() == 1 && pk[0].tag == 8 {
        depth += 1;
        if depth > 2 {
            return Err("nested compression".into());
        }
        let inner = decompress(&pk[0].body)?;
        // Re-parse from an owned buffer.
        let owned: Vec<(u8, Vec<u8>)> = packets(&inner)?
            .into_iter()
            .map(|p| (p.tag, p.body.into_owned()))
            .collect();
        pk = owned
            .into_iter()
            .map(|(tag, body)| Packet {
                tag,
                body: body.into(),
            })
            .collect();
    }
    let literal = pk
        .iter()
        .find(|p| p.tag == 11)
        .ok_or("not a signed message: no literal data packet")?;
    let sigs: Vec<&Packet> = pk.iter().filter(|p| p.tag == 2).collect();
    if sigs.is_empty() {
        return Err("no signature packet in the message".into());
    }
    if pk.iter().filter(|p| p.tag == 11).count() != 1 {
        return Err("more than one literal data packet".into());
    }
    let l = &literal.body;
    let name_len = *l.get(1).ok_or("truncated literal data")? as usize;
    let content = l.get(2 + name_len + 4..).ok_or("truncated literal data")?;
    let mut why = Vec::new();
    for sp in sigs {
        let s = match parse_sig(&sp.body) {
            Ok(s) => s,
            Err(e) => {
                why.push(e);
                continue;
            }
        };
        if s.sig_type != 0x00 {
            why.push(format!(
                "signature type {:#04x} is not a binary document signature",
                s.sig_type
            ));
            continue;
        }
        let mut trailer = vec![0x04, 0xff];
        trailer.extend_from_slice(&(s.hashed.len() as u32).to_be_bytes());
        let (digest, _) = match hash(s.hash_algo, &[content, &s.hashed, &trailer]) {
            Ok(d) => d,
            Err(e) => {
                why.push(e);
                continue;
            }
        };
        if digest[..2] != s.left16 {
            why.push("the signed hash prefix does not match (the content was modified)".into());
            continue;
        }
        let candidates: Vec<&GpgKey> = keys
            .iter()
            .filter(|k| match (&s.issuer_fpr, &s.issuer_id) {
                (Some(f), _) => &k.fingerprint == f,
                (None, Some(id)) => k.fingerprint.ends_with(id.as_str()),
                (None, None) => true,
            })
            .collect();
        if candidates.is_empty() {
            why.push(format!(
                "signed by key {} which is not in the policy's keyring",
                s.issuer_fpr
                    .as_deref()
                    .or(s.issuer_id.as_deref())
                    .unwrap_or("?")
            ));
            continue;
        }
        for k in candidates {
            match verify_with(k, &s, &digest) {
                Ok(()) => {
                    return Ok(Verified {
                        content: content.to_vec(),
                        signer: k.fingerprint.clone(),
                    })
                }
                Err(e) => why.push(format!("key {}: {e}", k.fingerprint)),
            }
        }
    }
    Err(why.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_lengths_and_garbage() {
        // New-format partial lengths are joined.
        let mut b = vec![0xc0 | 11, 0xe1]; // partial 2 bytes
        b.extend_from_slice(b"ab");
        b.push(3);
        b.extend_from_slice(b"cde");
        let p = packets(&b).unwrap();
        assert_eq!((p[0].tag, &p[0].body[..]), (11, &b"abcde"[..]));
        assert!(packets(b"\x00garbage").is_err());
        assert!(packets(&[0xc2, 0xff, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(verify_message(b"", &[]).is_err());
        assert!(parse_keyring(
            b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nAAAA\n-----END PGP PUBLIC KEY BLOCK-----\n"
        )
        .is_err());
    }
}
