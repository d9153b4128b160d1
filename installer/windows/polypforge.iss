; Inno Setup 6 script: wraps the PyInstaller folder dist\PolypForge (built on Windows with the same spec)
; into one setup.exe for offline PCs. Not built or tested on the Linux build machine.
;   iscc /DFlavour=cpu installer\windows\polypforge.iss      ->  dist\PolypForge-0.1.0-windows-x64-cpu-setup.exe
;   iscc /DFlavour=gpu /DSourceDir=..\..\dist\gpu\PolypForge installer\windows\polypforge.iss
#ifndef Flavour
  #define Flavour "cpu"
#endif
#ifndef SourceDir
  #define SourceDir "..\..\dist\PolypForge"
#endif
#define AppVersion "0.1.0"

[Setup]
AppId={{6C0D5B8E-2F4A-4E61-9C3B-5D1A7F0E9B21}
AppName=PolypForge
AppVersion={#AppVersion}
AppPublisher=PolypForge
; Per-user install by default (no admin rights on locked-down PCs); an administrator can choose all users.
PrivilegesRequired=lowest
PrivilegesRequiredOverridesAllowed=dialog
DefaultDirName={autopf}\PolypForge
DefaultGroupName=PolypForge
DisableProgramGroupPage=yes
OutputDir=..\..\dist
OutputBaseFilename=PolypForge-{#AppVersion}-windows-x64-{#Flavour}-setup
ArchitecturesAllowed=x64compatible
ArchitecturesInstallIn64BitMode=x64compatible
Compression=lzma2/max
SolidCompression=yes
WizardStyle=modern

[Files]
; The app itself: replaced on update.
Source: "{#SourceDir}\PolypForge.exe"; DestDir: "{app}"; Flags: ignoreversion
Source: "{#SourceDir}\_internal\*"; DestDir: "{app}\_internal"; Flags: ignoreversion recursesubdirs createallsubdirs
Source: "{#SourceDir}\BUILD_INFO.json"; DestDir: "{app}"; Flags: ignoreversion skipifsourcedoesntexist
; The demo bundles go to {app}\models; real bundles copied there by the curator are never touched.
Source: "{#SourceDir}\models\demo-sd-inpaint\*"; DestDir: "{app}\models\demo-sd-inpaint"; Flags: ignoreversion recursesubdirs createallsubdirs
Source: "{#SourceDir}\models\demo-dinov2\*"; DestDir: "{app}\models\demo-dinov2"; Flags: ignoreversion recursesubdirs createallsubdirs

[Dirs]
Name: "{app}\models"; Flags: uninsneveruninstall

[InstallDelete]
; An update must not mix old and new libraries.
Type: filesandordirs; Name: "{app}\_internal"

[Icons]
Name: "{group}\PolypForge"; Filename: "{app}\PolypForge.exe"
Name: "{group}\PolypForge doctor"; Filename: "{cmd}"; Parameters: "/k ""{app}\PolypForge.exe"" doctor"
Name: "{group}\Models folder"; Filename: "{app}\models"

[Run]
Filename: "{app}\PolypForge.exe"; Description: "Open PolypForge"; Flags: nowait postinstall skipifsilent
