//! One shell session: agree on keys, then copy between the PTY and the
//! relay, sealed, until the shell exits or either side ends it.

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use penguindome_protocol::shell::{Frame, Opener, Sealer, ShellTask};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_tungstenite::tungstenite::Message;

use super::connect::Socket;
use super::pty::{self, Shell};

/// How a session ended.
#[derive(Debug)]
pub struct Finished {
    /// The shell's exit status, when it exited on its own.
    pub exit_code: Option<i32>,
    /// What happened, in a line.
    pub detail: String,
}

/// Runs the session over an authenticated socket.
pub async fn run(
    task: &ShellTask,
    socket: Socket,
    mut sealer: Sealer,
    mut opener: Opener,
) -> anyhow::Result<Finished> {
    let Shell { pty, mut child } = pty::spawn(task)?;
    let (mut pty_out, mut pty_in) = pty.into_split();
    let (mut tx, mut rx) = socket.split();
    let deadline = tokio::time::sleep(Duration::from_secs(task.max_duration_secs.max(1)));
    tokio::pin!(deadline);
    let mut buf = vec![0u8; 16 * 1024];
    let ended = loop {
        tokio::select! {
            read = pty_out.read(&mut buf) => match read {
                Ok(n) if n > 0 => {
                    let wire = sealer.seal(&Frame::Data(buf[..n].to_vec()));
                    if tx.send(Message::Binary(wire.into())).await.is_err() {
                        break Err("the relay went away".to_string());
                    }
                }
                // EOF or EIO: every holder of the terminal closed it.
                _ => break Ok(()),
            },
            message = rx.next() => match message {
                Some(Ok(Message::Binary(wire))) => match opener.open(&wire) {
                    Ok(Frame::Data(d)) => {
                        if pty_in.write_all(&d).await.is_err() {
                            break Ok(());
                        }
                    }
                    Ok(Frame::Resize { cols, rows }) => {
                        let _ = pty_in.resize(pty_process::Size::new(rows.max(1), cols.max(1)));
                    }
                    Ok(Frame::Close) => break Err("the administrator ended the session".into()),
                    Ok(Frame::Exit(_)) => break Err("the administrator's side sent an exit status".into()),
                    Err(e) => break Err(format!("{e}; the session is ended")),
                },
                Some(Ok(Message::Close(frame))) => {
                    let why = frame.map(|f| f.reason.to_string()).unwrap_or_default();
                    break Err(format!("the relay ended the session: {why}"));
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(_)) => break Err("the relay sent something other than a sealed frame".into()),
                Some(Err(e)) => break Err(format!("the connection to the relay broke: {e}")),
                None => break Err("the relay closed the connection".into()),
            },
            status = child.wait() => {
                // Output still in the PTY is flushed before the status.
                drain(&mut pty_out, &mut buf, &mut sealer, &mut tx).await;
                let code = status.map(pty::exit_code).unwrap_or(255);
                let _ = tx.send(Message::Binary(sealer.seal(&Frame::Exit(code)).into())).await;
                let _ = tx.close().await;
                return Ok(Finished { exit_code: Some(code), detail: format!("the shell exited with status {code}") });
            }
            () = &mut deadline => break Err("the session reached its maximum duration".into()),
        }
    };
    match ended {
        Ok(()) => {
            let status = child.wait().await.map(pty::exit_code).unwrap_or(255);
            let _ = tx
                .send(Message::Binary(sealer.seal(&Frame::Exit(status)).into()))
                .await;
            let _ = tx.close().await;
            Ok(Finished {
                exit_code: Some(status),
                detail: format!("the shell exited with status {status}"),
            })
        }
        Err(why) => {
            pty::hang_up(&mut child).await;
            let _ = tx.close().await;
            Ok(Finished {
                exit_code: None,
                detail: why,
            })
        }
    }
}

/// Sends what the PTY still holds, briefly.
async fn drain(
    pty_out: &mut pty_process::OwnedReadPty,
    buf: &mut [u8],
    sealer: &mut Sealer,
    tx: &mut futures_util::stream::SplitSink<Socket, Message>,
) {
    loop {
        match tokio::time::timeout(Duration::from_millis(50), pty_out.read(buf)).await {
            Ok(Ok(n)) if n > 0 => {
                let wire = sealer.seal(&Frame::Data(buf[..n].to_vec()));
                if tx.send(Message::Binary(wire.into())).await.is_err() {
                    return;
                }
            }
            _ => return,
        }
    }
}
