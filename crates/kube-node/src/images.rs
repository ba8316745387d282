//! Which local executable an image stands for.
//!
//! There is no container runtime here: an image name is looked up in a
//! table (`--image postlaunch/sandbox=/path/to/sandbox`), and the tag is
//! passed to the process as `POSTLAUNCH_IMAGE_TAG`, so two versions of one
//! image can be told apart (`postlaunch/sandbox:v1` and `:v2` run the same
//! binary; the manifest's args or env say what differs).

use std::path::PathBuf;

/// `repository=executable` entries.
#[derive(Debug, Clone, Default)]
pub struct ImageTable {
    entries: Vec<(String, PathBuf)>,
}

/// A resolved image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The executable that runs when the container gives no `command`.
    pub executable: PathBuf,
    /// The tag (`latest` when the image names none).
    pub tag: String,
}

impl ImageTable {
    /// Parses `REPOSITORY=PATH` entries.
    pub fn parse(entries: &[String]) -> Result<ImageTable, String> {
        let mut table = ImageTable::default();
        for entry in entries {
            let Some((repo, path)) = entry.split_once('=') else {
                return Err(format!(
                    "--image {entry:?}: expected REPOSITORY=PATH, e.g. postlaunch/sandbox=/usr/local/bin/sandbox"
                ));
            };
            let tagged = repo.rsplit('/').next().is_some_and(|last| last.contains(':'));
            if repo.is_empty() || path.is_empty() || tagged {
                return Err(format!(
                    "--image {entry:?}: the repository has no tag and neither side is empty"
                ));
            }
            table.entries.push((repo.to_owned(), PathBuf::from(path)));
        }
        Ok(table)
    }

    /// The executable and tag of `image` (`repo[:tag][@digest]`).
    pub fn resolve(&self, image: &str) -> Option<Resolved> {
        let image = image.split_once('@').map_or(image, |(name, _)| name);
        // A colon after the last slash starts the tag (a registry port has a slash after it).
        let (repo, tag) = match image.rfind(':') {
            Some(i) if !image[i..].contains('/') => (&image[..i], &image[i + 1..]),
            _ => (image, "latest"),
        };
        self.entries
            .iter()
            .find(|(r, _)| r == repo)
            .map(|(_, path)| Resolved { executable: path.clone(), tag: tag.to_owned() })
    }

    /// The repositories known, for error messages.
    pub fn repositories(&self) -> Vec<&str> {
        self.entries.iter().map(|(r, _)| r.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_and_digests_are_split_off() {
        let table = ImageTable::parse(&[
            "postlaunch/sandbox=/bin/sandbox".into(),
            "localhost:5000/x=/bin/x".into(),
        ])
        .unwrap();
        let r = table.resolve("postlaunch/sandbox:v2").unwrap();
        assert_eq!((r.executable, r.tag.as_str()), (PathBuf::from("/bin/sandbox"), "v2"));
        assert_eq!(table.resolve("postlaunch/sandbox").unwrap().tag, "latest");
        assert_eq!(table.resolve("postlaunch/sandbox:v1@sha256:abc").unwrap().tag, "v1");
        assert_eq!(table.resolve("localhost:5000/x").unwrap().tag, "latest");
        assert!(table.resolve("nginx:1.25").is_none());
    }

    #[test]
    fn malformed_entries_are_refused_by_name() {
        assert!(ImageTable::parse(&["sandbox".into()]).unwrap_err().contains("REPOSITORY=PATH"));
        assert!(ImageTable::parse(&["a:1=/x".into()]).is_err());
        assert!(ImageTable::parse(&["=/x".into()]).is_err());
    }
}
