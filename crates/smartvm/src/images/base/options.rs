//! What one `ensure_base_image` call asks for: a [`Preset`] and, for `hosted`, its manifest.

use std::path::PathBuf;
use std::str::FromStr;

use crate::images::ImageError;

/// Which bundle to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Preset {
    /// Newest release → its CI train, newest kernel, squashfs rootfs preferred.
    #[default]
    Latest,
    /// CI train v1.7 with Firecracker v1.7.0.
    Lts,
    /// A project-owned manifest (URL or path).
    Hosted,
}

impl Preset {
    /// `latest`, `lts` or `hosted`.
    pub fn as_str(self) -> &'static str {
        match self {
            Preset::Latest => "latest",
            Preset::Lts => "lts",
            Preset::Hosted => "hosted",
        }
    }
}

impl FromStr for Preset {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "latest" => Ok(Preset::Latest),
            "lts" => Ok(Preset::Lts),
            "hosted" => Ok(Preset::Hosted),
            other => Err(format!("unknown preset {other:?} (latest, lts, hosted)")),
        }
    }
}

/// Options of one `ensure_base_image` call.
#[derive(Debug, Clone, Default)]
pub struct BaseImageOptions {
    /// The preset. `None`: `hosted` when a manifest URL or path is given (here, or at the
    /// orchestrator: [`SmartVmOptions`](crate::SmartVmOptions) and its environment), else
    /// `latest` (see [`effective_preset`](Self::effective_preset)).
    pub preset: Option<Preset>,
    /// Hosted manifest URL.
    pub manifest_url: Option<String>,
    /// Hosted manifest path.
    pub manifest_path: Option<PathBuf>,
    /// Re-download even when a valid copy is cached.
    pub force_download: bool,
}

impl BaseImageOptions {
    /// The preset these options resolve: a named one, else `hosted` when a manifest is given,
    /// else `latest`. A manifest beside another named preset is `INVALID_CONFIG`, naming both
    /// (a manifest implies `hosted`; which of the two was meant cannot be guessed).
    pub fn effective_preset(&self) -> Result<Preset, ImageError> {
        let manifest =
            self.manifest_url.clone().or_else(|| self.manifest_path.as_ref().map(|p| p.display().to_string()));
        match (self.preset, manifest) {
            (None, None) => Ok(Preset::Latest),
            (None, Some(_)) | (Some(Preset::Hosted), _) => Ok(Preset::Hosted),
            (Some(preset), None) => Ok(preset),
            (Some(preset), Some(manifest)) => Err(ImageError::PresetConflict { preset: preset.as_str(), manifest }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_implies_hosted_unless_another_preset_is_named() {
        let url = || Some("https://example.com/m.json".to_string());
        let path = || Some(PathBuf::from("/srv/m.json"));
        let o = |preset, manifest_url, manifest_path| BaseImageOptions {
            preset,
            manifest_url,
            manifest_path,
            ..Default::default()
        };
        assert_eq!(o(None, None, None).effective_preset().unwrap(), Preset::Latest);
        assert_eq!(o(Some(Preset::Lts), None, None).effective_preset().unwrap(), Preset::Lts);
        assert_eq!(o(None, url(), None).effective_preset().unwrap(), Preset::Hosted);
        assert_eq!(o(None, None, path()).effective_preset().unwrap(), Preset::Hosted);
        assert_eq!(o(Some(Preset::Hosted), url(), None).effective_preset().unwrap(), Preset::Hosted);
        assert_eq!(o(Some(Preset::Hosted), None, None).effective_preset().unwrap(), Preset::Hosted);
        for (preset, m) in [(Preset::Latest, o(None, url(), None)), (Preset::Lts, o(None, None, path()))] {
            let err = BaseImageOptions { preset: Some(preset), ..m }.effective_preset().unwrap_err();
            assert_eq!(err.code(), "INVALID_CONFIG");
            let text = err.to_string();
            assert!(text.contains(preset.as_str()) && text.contains("m.json"), "names both: {text}");
        }
    }
}
