//! Tar archives as package formats want them: root-owned, fixed mtime,
//! exact modes, paths spelled the way each format's tools expect.

use std::io;

/// One member of an archive.
pub struct TarMember<'a> {
    /// Path inside the archive, spelled as the format wants ("./usr/bin/x"
    /// for dpkg, "usr/bin/x" for pacman); directories end with "/".
    pub path: String,
    /// Permission bits.
    pub mode: u32,
    /// Contents; `None` for a directory.
    pub data: Option<&'a [u8]>,
}

/// Writes a GNU tar archive of `members`, all owned by root.
pub fn write_tar(members: &[TarMember<'_>], mtime: u64) -> io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    for m in members {
        let mut header = tar::Header::new_gnu();
        header.set_uid(0);
        header.set_gid(0);
        header.set_username("root")?;
        header.set_groupname("root")?;
        header.set_mtime(mtime);
        header.set_mode(m.mode);
        // set_path would normalise "./" away, which dpkg's own archives
        // keep; every path we package is short, so write the field directly.
        let name = m.path.as_bytes();
        let field = &mut header.as_old_mut().name;
        if name.len() >= field.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("archive path too long: {}", m.path),
            ));
        }
        field[..name.len()].copy_from_slice(name);
        match m.data {
            Some(data) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(data.len() as u64);
                header.set_cksum();
                builder.append(&header, data)?;
            }
            None => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_size(0);
                header.set_cksum();
                builder.append(&header, io::empty())?;
            }
        }
    }
    builder.into_inner()
}

/// Gzip at the best ratio, with no name or time in the header, so equal
/// input gives equal output.
pub fn gzip(data: &[u8]) -> io::Result<Vec<u8>> {
    use std::io::Write;
    let mut enc = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::best());
    enc.write_all(data)?;
    enc.finish()
}

/// Hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}
