//! TEMPORARY interface stub (replaced by the storage branch).
#![allow(missing_docs, unused_variables)]
use std::path::PathBuf;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub struct Volumes;
impl Volumes {
    pub fn new(configs: &[crate::config::VolumeConfig]) -> Volumes {
        Volumes
    }
    pub fn get(&self, host: &str) -> Result<&Volume, Error> {
        todo!()
    }
    pub fn iter(&self) -> impl Iterator<Item = &Volume> {
        std::iter::empty()
    }
}
pub struct Volume;
impl Volume {
    pub fn config(&self) -> &crate::config::VolumeConfig {
        todo!()
    }
    pub fn host(&self) -> &str {
        todo!()
    }
    pub fn check_available(&self) -> Result<(), Error> {
        todo!()
    }
    pub fn folder_path(&self, folder: &FolderRef<'_>) -> Result<PathBuf, Error> {
        todo!()
    }
    pub fn trash_path(&self, folder: &FolderRef<'_>) -> Result<PathBuf, Error> {
        todo!()
    }
    pub fn create_folder(&self, folder: &FolderRef<'_>) -> Result<PathBuf, Error> {
        todo!()
    }
    pub fn remove_folder(
        &self,
        folder: &FolderRef<'_>,
        cancel: &CancellationToken,
        progress: &Progress,
    ) -> Result<Outcome, Error> {
        todo!()
    }
    pub fn move_to_trash(&self, folder: &FolderRef<'_>) -> Result<(), Error> {
        todo!()
    }
    pub fn restore_from_trash(&self, folder: &FolderRef<'_>) -> Result<(), Error> {
        todo!()
    }
}
#[derive(Clone, Copy)]
pub struct FolderRef<'a> {
    pub id: uuid::Uuid,
    pub host: &'a str,
    pub quota_scope_id: Option<&'a str>,
}
#[derive(Default)]
pub struct Progress;
impl Progress {
    pub fn snapshot(&self) -> Counts {
        todo!()
    }
}
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub bytes: u64,
}
pub enum Outcome {
    Completed(Report),
    Cancelled(Report),
}
pub struct Report {
    pub counts: Counts,
    pub elapsed: Duration,
}
#[derive(Debug, thiserror::Error)]
#[error("stub")]
pub struct Error;
impl Error {
    pub fn from_panic(m: String) -> Error {
        Error
    }
    pub fn is_transient(&self) -> bool {
        todo!()
    }
    pub fn kind(&self) -> &'static str {
        todo!()
    }
}
