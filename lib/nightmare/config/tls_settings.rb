# frozen_string_literal: true

require "digest"

module Nightmare
  # What one +ssl+ block says, checked and made absolute: certificate and
  # key pairs (the first is the default, the others chosen by the name a
  # client asks for), the protocol versions, the cipher order, whether
  # HTTP/2 is offered, whether plain listeners redirect here, and the
  # certificates ordered from an ACME issuer (AcmeSettings). Two settings
  # are equal only if their files' contents are too, so that HUP after a
  # certificate renewal reloads it even when no path changed.
  class TlsSettings
    PROTOCOLS = %w[TLSv1.2 TLSv1.3].freeze

    attr_reader :certificates, :protocols, :prefer_server_ciphers, :http2, :redirect, :acme

    def initialize(certificates:, protocols: PROTOCOLS, prefer_server_ciphers: false, http2: true, redirect: false,
                   acme: nil)
      @certificates = certificates.map { |pair| pair.map { |path| File.expand_path(path) }.freeze }.freeze
      @protocols = protocols.dup.freeze
      @prefer_server_ciphers = prefer_server_ciphers
      @http2 = http2
      @redirect = redirect
      @acme = acme
      @fingerprint = fingerprint_files
      freeze
    end

    # Reads and parses every file now, as the front will: ArgumentError
    # naming the directive and the file at fault.
    def check!
      Nightmare::Native.check_tls(to_native)
      self
    end

    # What Nightmare::Native::Front takes.
    def to_native
      { certificates: certificates, protocols: protocols, prefer_server_ciphers: prefer_server_ciphers, http2: http2,
        redirect: redirect, acme: acme&.to_native }
    end

    def ==(other)
      other.is_a?(TlsSettings) && other.to_native == to_native && other.fingerprint == fingerprint
    end
    alias eql? ==

    def hash = [to_native, fingerprint].hash

    protected

    attr_reader :fingerprint

    private

    # Unreadable files are left to #check!, which names them.
    def fingerprint_files
      certificates.flatten.map { |path| Digest::SHA256.file(path).hexdigest rescue nil } # rubocop:disable Style/RescueModifier
    end
  end
end
