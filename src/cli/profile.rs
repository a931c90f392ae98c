//! `telesink profile --client NAME`: an Apple configuration profile (`.mobileconfig`, an XML
//! property list with a `com.apple.dnsSettings.managed` payload) that points the device's DNS
//! at telesink's DoH URL with its id, `https://<tls_name>/dns-query/<NAME>`.

use std::hash::{BuildHasher, Hasher};
use std::path::Path;
use std::process::ExitCode;

use crate::config::Config;

pub fn run(config_path: &Path, client: &str) -> ExitCode {
    let config = match Config::load(config_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("telesink: invalid configuration: {e}");
            return ExitCode::from(1);
        }
    };
    match profile(&config, client) {
        Ok(p) => {
            print!("{p}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("telesink: {e}");
            ExitCode::from(1)
        }
    }
}

/// The DoH URL a device with id `client` uses.
pub fn doh_url(config: &Config, client: &str) -> Result<String, String> {
    let enc = &config.server.encrypted;
    let (Some(addr), Some(name)) = (enc.https_listen.first(), &enc.tls_name) else {
        return Err(format!(
            "{}: a profile needs DNS over HTTPS: set server.https_listen and server.tls_name",
            config.path.display()
        ));
    };
    let Some(id) = crate::tls::id_label(client) else {
        return Err(format!(
            "--client {client:?}: a device id is letters, digits, '-' and '_' (at most 63), like anna-phone"
        ));
    };
    let port = match addr.port() {
        443 => String::new(),
        p => format!(":{p}"),
    };
    Ok(format!("https://{name}{port}/dns-query/{id}"))
}

/// The profile as XML.
pub fn profile(config: &Config, client: &str) -> Result<String, String> {
    let url = doh_url(config, client)?;
    let name = config
        .server
        .encrypted
        .tls_name
        .as_deref()
        .unwrap_or_default();
    let id = crate::tls::id_label(client).unwrap_or_default();
    // Reverse-DNS identifiers: installing a newer profile for the same device replaces it.
    let reversed: Vec<&str> = name.rsplit('.').collect();
    let ident = format!("{}.telesink.{id}", reversed.join("."));
    let (outer_uuid, dns_uuid) = (uuid(), uuid());
    Ok(format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
	<key>PayloadContent</key>
	<array>
		<dict>
			<key>DNSSettings</key>
			<dict>
				<key>DNSProtocol</key>
				<string>HTTPS</string>
				<key>ServerURL</key>
				<string>{url}</string>
			</dict>
			<key>PayloadDisplayName</key>
			<string>telesink DNS ({id})</string>
			<key>PayloadIdentifier</key>
			<string>{ident}.dns</string>
			<key>PayloadType</key>
			<string>com.apple.dnsSettings.managed</string>
			<key>PayloadUUID</key>
			<string>{dns_uuid}</string>
			<key>PayloadVersion</key>
			<integer>1</integer>
		</dict>
	</array>
	<key>PayloadDescription</key>
	<string>Sends this device's DNS to telesink over HTTPS as {id}.</string>
	<key>PayloadDisplayName</key>
	<string>telesink DNS for {id}</string>
	<key>PayloadIdentifier</key>
	<string>{ident}</string>
	<key>PayloadRemovalDisallowed</key>
	<false/>
	<key>PayloadType</key>
	<string>Configuration</string>
	<key>PayloadUUID</key>
	<string>{outer_uuid}</string>
	<key>PayloadVersion</key>
	<integer>1</integer>
</dict>
</plist>
"#,
        url = xml(&url),
        id = xml(&id),
        ident = xml(&ident),
    ))
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A random (version 4) UUID: the profile format wants one per payload.
fn uuid() -> String {
    let rand = || {
        std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
    };
    let (a, b) = (rand(), rand());
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&a.to_be_bytes());
    bytes[8..].copy_from_slice(&b.to_be_bytes());
    bytes[6] = (bytes[6] & 0x0F) | 0x40;
    bytes[8] = (bytes[8] & 0x3F) | 0x80;
    let h: String = bytes.iter().map(|b| format!("{b:02X}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}
