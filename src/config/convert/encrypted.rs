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
