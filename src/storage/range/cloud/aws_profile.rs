//! Named AWS profiles from the shared config and credentials files, as the AWS CLI reads them:
//! `AWS_PROFILE` (else `default`) in `AWS_CONFIG_FILE` (default `~/.aws/config`, sections
//! `[profile NAME]` or `[default]`) and `AWS_SHARED_CREDENTIALS_FILE` (default
//! `~/.aws/credentials`, sections `[NAME]`). Static keys, session token, region and
//! `endpoint_url` are read; the environment wins over the files, the credentials file over the
//! config file. Profiles that get credentials some other way (`role_arn`, `sso_*`,
//! `credential_process`) are not followed.

use std::collections::HashMap;
use std::path::PathBuf;

/// What a profile sets (only the settings annfs uses).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Profile {
    /// `aws_access_key_id`.
    pub access_key_id: Option<String>,
    /// `aws_secret_access_key`.
    pub secret_access_key: Option<String>,
    /// `aws_session_token`.
    pub session_token: Option<String>,
    /// `region`.
    pub region: Option<String>,
    /// `endpoint_url`.
    pub endpoint_url: Option<String>,
    /// Settings that would get credentials some other way, which annfs does not follow.
    pub unsupported: Vec<String>,
}

/// Keys of the profile section `name` in INI `text` (`config`: sections are `[profile NAME]`,
/// except `[default]`). `None` when the section is absent.
fn section(text: &str, name: &str, config: bool) -> Option<HashMap<String, String>> {
    let wanted = |header: &str| {
        let h = header.split_whitespace().collect::<Vec<_>>();
        match (config, h.as_slice()) {
            (true, ["profile", n]) => *n == name,
            (_, [n]) => *n == name && (!config || name == "default"),
            _ => false,
        }
    };
    let mut inside = false;
    let mut keys: Option<HashMap<String, String>> = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(h) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = wanted(h.trim());
            if inside {
                keys.get_or_insert_with(HashMap::new);
            }
            continue;
        }
        if let (true, Some(map), Some((k, v))) = (inside, keys.as_mut(), line.split_once('=')) {
            map.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    keys
}

fn home_file(var: &str, rel: &str) -> Option<PathBuf> {
    match std::env::var_os(var) {
        Some(p) => Some(PathBuf::from(p)),
        None => std::env::var_os("HOME").map(|h| PathBuf::from(h).join(rel)),
    }
}

/// The profile `name` merged from `config` and `credentials` texts (the credentials file wins);
/// `None` when neither has it.
pub fn parse(name: &str, config: Option<&str>, credentials: Option<&str>) -> Option<Profile> {
    let from_config = config.and_then(|t| section(t, name, true));
    let from_creds = credentials.and_then(|t| section(t, name, false));
    if from_config.is_none() && from_creds.is_none() {
        return None;
    }
    let mut keys = from_config.unwrap_or_default();
    keys.extend(from_creds.unwrap_or_default());
    let take = |k: &str| keys.get(k).filter(|v| !v.is_empty()).cloned();
    let mut unsupported: Vec<String> = keys
        .keys()
        .filter(|k| *k == "role_arn" || *k == "credential_process" || k.starts_with("sso_") || *k == "web_identity_token_file")
        .cloned()
        .collect();
    unsupported.sort();
    Some(Profile {
        access_key_id: take("aws_access_key_id"),
        secret_access_key: take("aws_secret_access_key"),
        session_token: take("aws_session_token"),
        region: take("region"),
        endpoint_url: take("endpoint_url"),
        unsupported,
    })
}

/// The active profile from the files, if any: `Ok(None)` when `AWS_PROFILE` is unset and there
/// is no `default` profile; `Err` naming the files when `AWS_PROFILE` names a profile neither
/// file has.
pub fn load() -> Result<Option<Profile>, String> {
    let named = std::env::var("AWS_PROFILE").ok().filter(|p| !p.is_empty());
    let name = named.clone().unwrap_or_else(|| "default".into());
    let config = home_file("AWS_CONFIG_FILE", ".aws/config");
    let creds = home_file("AWS_SHARED_CREDENTIALS_FILE", ".aws/credentials");
    let read = |p: &Option<PathBuf>| p.as_ref().and_then(|p| std::fs::read_to_string(p).ok());
    match parse(&name, read(&config).as_deref(), read(&creds).as_deref()) {
        Some(p) => Ok(Some(p)),
        None if named.is_some() => {
            let show = |p: &Option<PathBuf>| p.as_ref().map_or("-".into(), |p| p.display().to_string());
            Err(format!("AWS profile '{name}' (AWS_PROFILE) is in neither {} nor {}", show(&config), show(&creds)))
        }
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = "[default]\nregion = eu-west-1\n\n[profile lab]\nregion=us-east-2\nendpoint_url = http://127.0.0.1:9000\n# c\n[profile sso]\nsso_start_url = x\n";
    const CREDS: &str = "[lab]\naws_access_key_id = AK\naws_secret_access_key = SK\n[default]\naws_access_key_id = D\n";

    #[test]
    fn reads_named_and_default_profiles() {
        let lab = parse("lab", Some(CONFIG), Some(CREDS)).unwrap();
        assert_eq!(lab.access_key_id.as_deref(), Some("AK"));
        assert_eq!(lab.secret_access_key.as_deref(), Some("SK"));
        assert_eq!(lab.region.as_deref(), Some("us-east-2"));
        assert_eq!(lab.endpoint_url.as_deref(), Some("http://127.0.0.1:9000"));
        let d = parse("default", Some(CONFIG), Some(CREDS)).unwrap();
        assert_eq!((d.region.as_deref(), d.access_key_id.as_deref()), (Some("eu-west-1"), Some("D")));
        assert!(parse("nope", Some(CONFIG), Some(CREDS)).is_none());
        assert_eq!(parse("sso", Some(CONFIG), None).unwrap().unsupported, vec!["sso_start_url".to_string()]);
        // `[lab]` in the config file is not `[profile lab]`.
        assert!(parse("lab", Some("[lab]\nregion=x\n"), None).is_none());
    }
}
