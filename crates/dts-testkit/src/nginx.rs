//! A private nginx load-balancing HTTP across several dts servers (round
//! robin), as the seed's deployment puts them behind one.

use crate::process::{find_program, free_port, kill, stop, wait_for_port};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tempfile::TempDir;

/// A private nginx, stopped when dropped.
pub struct Nginx {
    child: Option<Child>,
    port: u16,
    _dir: TempDir,
}

impl Nginx {
    /// Starts nginx on a free port, proxying to `upstreams` ("127.0.0.1:PORT").
    pub fn start(upstreams: &[String]) -> Nginx {
        let dir = TempDir::new().expect("temp dir for nginx");
        for _ in 0..5 {
            let port = free_port();
            let conf = dir.path().join("nginx.conf");
            std::fs::write(&conf, config(port, upstreams, dir.path())).expect("nginx.conf");
            let mut child = Command::new(find_program("nginx", "DTS_NGINX"))
                .arg("-c")
                .arg(&conf)
                .arg("-p")
                .arg(dir.path())
                .args(["-g", "daemon off;"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start nginx");
            if wait_for_port(port, Duration::from_secs(10)) && matches!(child.try_wait(), Ok(None))
            {
                return Nginx {
                    child: Some(child),
                    port,
                    _dir: dir,
                };
            }
            kill(&mut child);
        }
        panic!("nginx did not start");
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop(&mut child, Duration::from_secs(2));
        }
    }
}

fn config(port: u16, upstreams: &[String], dir: &std::path::Path) -> String {
    let servers: String = upstreams
        .iter()
        .map(|u| format!("        server {u};\n"))
        .collect();
    let dir = dir.display();
    format!(
        "worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    client_max_body_size 64m;
    upstream dts {{
{servers}        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://dts;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_buffering off;
        }}
    }}
}}
"
    )
}
