//! `[server]`'s encrypted-DNS keys: `tls_listen`, `https_listen`, `tls_cert`, `tls_key`,
//! `tls_name`, `ddr`. What the certificate files hold is checked by [`crate::tls`] (at start, in
//! `check`, at each change), not here: the config stays loadable while a renewal is half done.

use super::*;

impl Convert<'_> {
    pub(super) fn encrypted(
        &self,
        tls_listen: Option<Spanned<Array<TlsListenAddr>>>,
        https_listen: Option<Spanned<Array<TlsListenAddr>>>,
        tls_cert: Option<Spanned<TlsFile>>,
        tls_key: Option<Spanned<TlsFile>>,
        tls_name: Option<Spanned<TlsName>>,
        ddr: Option<Flag>,
    ) -> Res<EncryptedConfig> {
        let mut cfg = EncryptedConfig {
            ddr: ddr.is_none_or(|f| f.0),
            ..EncryptedConfig::default()
        };
        let mut first_listener: Option<(Range<usize>, &str)> = None;
        for (list, k, out) in [
            (&tls_listen, "server.tls_listen", &mut cfg.tls_listen),
            (&https_listen, "server.https_listen", &mut cfg.https_listen),
        ] {
            let Some(list) = list else { continue };
            let mut seen: HashMap<SocketAddr, usize> = HashMap::new();
            for (addr, span, key) in self.items(list.get_ref(), k)? {
                if let Some(line) = seen.insert(addr.0, self.line(&span)) {
                    return Err(self.error(
                        &span,
                        key,
                        format!("{} is listed twice (also on line {line})", addr.0),
                    ));
                }
                out.push(addr.0);
            }
            if !out.is_empty() && first_listener.is_none() {
                first_listener = Some((list.span(), k));
            }
        }
        cfg.tls_cert = tls_cert
            .as_ref()
            .map(|p| self.base_dir.join(&p.get_ref().0));
        cfg.tls_key = tls_key.as_ref().map(|p| self.base_dir.join(&p.get_ref().0));
        cfg.tls_name = tls_name.as_ref().map(|n| n.get_ref().0.clone());
        if let Some((span, k)) = first_listener {
            for (missing, example) in [
                (cfg.tls_cert.is_none(), "tls_cert = \"tls/fullchain.pem\""),
                (cfg.tls_key.is_none(), "tls_key = \"tls/privkey.pem\""),
                (cfg.tls_name.is_none(), "tls_name = \"dns.home.example\""),
            ] {
                if missing {
                    return Err(self.error(
                        &span,
                        k,
                        format!(
                            "an encrypted listener needs a certificate and a name: add {example} to [server]"
                        ),
                    ));
                }
            }
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, ConfigError};
    use std::path::Path;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("config.toml"))
    }

    #[track_caller]
    fn fails(text: &str, line: usize, key: &str, part: &str) {
        match parse(text) {
            Err(ConfigError::Invalid {
                line: l,
                key: k,
                message,
                ..
            }) => {
                assert_eq!((l, k.as_str()), (line, key), "{message}");
                assert!(message.contains(part), "{message} lacks {part}");
            }
            other => panic!("expected an error at {line} {key}: {other:?}"),
        }
    }

    #[test]
    fn encrypted_keys() {
        let c = parse(
            "[server]\ntls_listen = [\"0.0.0.0:853\", \"[::]:853\"]\nhttps_listen = [\"192.168.1.2:443\"]\n\
             tls_cert = \"tls/fullchain.pem\"\ntls_key = \"tls/privkey.pem\"\ntls_name = \"DNS.Home.Example.\"\n",
        )
        .unwrap();
        let e = &c.server.encrypted;
        assert_eq!(e.tls_listen.len(), 2);
        assert_eq!(e.https_listen, vec!["192.168.1.2:443".parse().unwrap()]);
        assert!(e.tls_cert.as_ref().unwrap().ends_with("tls/fullchain.pem"));
        assert!(e.tls_cert.as_ref().unwrap().is_absolute());
        assert_eq!(e.tls_name.as_deref(), Some("dns.home.example"));
        assert!(e.ddr && e.enabled());
        // Off by default; ddr alone turns nothing on.
        let c = parse("[server]\nddr = false\n").unwrap();
        assert!(!c.server.encrypted.enabled() && !c.server.encrypted.ddr);

        fails(
            "[server]\ntls_listen = [\"0.0.0.0\"]\n",
            2,
            "server.tls_listen[0]",
            "IP:port",
        );
        fails(
            "[server]\n\nhttps_listen = [\"0.0.0.0:443\"]\ntls_cert = \"a.pem\"\ntls_key = \"k.pem\"\n",
            3,
            "server.https_listen",
            "tls_name",
        );
        fails(
            "[server]\ntls_name = \"not a name\"\n",
            2,
            "server.tls_name",
            "not a domain name",
        );
        fails(
            "[server]\ntls_listen = [\"127.0.0.1:853\", \"127.0.0.1:853\"]\n",
            2,
            "server.tls_listen[1]",
            "listed twice",
        );
        fails("[server]\ntls_cert = \"\"\n", 2, "server.tls_cert", "empty");
    }
}
