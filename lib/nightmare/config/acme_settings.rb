# frozen_string_literal: true

require "fileutils"
require "uri"

module Nightmare
  # What an ssl block's +acme_issuer+ and +acme_certificate+ lines say,
  # checked: the front orders a certificate for each +acme_certificate+
  # line from the issuer (RFC 8555), answers its challenges itself
  # (HTTP-01 on plain listeners, TLS-ALPN-01 on the block's), keeps account
  # and certificates in +state_path+ and renews at two thirds of the
  # lifetime, all without a HUP.
  #
  #   ssl do
  #     listen 443
  #     acme_certificate "example.com", "www.example.com"
  #     acme_issuer contact: "mailto:ops@example.com", state_path: "/var/lib/nightmare/acme",
  #                 accept_terms_of_service: true
  #   end
  class AcmeSettings
    LETS_ENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"
    DEFAULT_STATE_PATH = "/var/lib/nightmare/acme"
    OPTIONS = %i[contact state_path accept_terms_of_service ca_file challenge].freeze
    # Both by default: HTTP-01 where a plain listener is, else TLS-ALPN-01,
    # and the other one after a failure.
    CHALLENGES = %w[http-01 tls-alpn-01].freeze
    MAX_NAMES = 100
    # RFC 1123 labels; HTTP-01 and TLS-ALPN-01 cannot prove wildcards.
    DNS_NAME = /\A(?=.{1,253}\z)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{0,61}[a-z0-9]\z/

    attr_reader :directory, :contact, :state_path, :accept_terms_of_service, :ca_file, :challenge, :certificates

    def initialize(certificates:, directory: LETS_ENCRYPT, contact: [], state_path: DEFAULT_STATE_PATH,
                   accept_terms_of_service: false, ca_file: nil, challenge: nil)
      @directory = check_directory(directory)
      @contact = check_contact(contact)
      @accept_terms_of_service = check_terms(accept_terms_of_service)
      @state_path = check_state_path(state_path)
      @ca_file = ca_file && check_ca_file(ca_file)
      @challenge = challenge && check_challenge(challenge)
      @certificates = check_certificates(certificates)
      freeze
    end

    def to_native
      { directory: directory, contact: contact, state_path: state_path,
        accept_terms_of_service: accept_terms_of_service, ca_file: ca_file, challenge: challenge,
        certificates: certificates }
    end

    def ==(other) = other.is_a?(AcmeSettings) && other.to_native == to_native
    alias eql? ==

    def hash = to_native.hash

    private

    def check_directory(url)
      uri = URI.parse(url.to_s)
      return url.to_s.dup.freeze if uri.is_a?(URI::HTTPS) && uri.host && !uri.host.empty?

      raise ArgumentError, "acme_issuer #{url.inspect} is not an https:// URL of an ACME directory (Let's Encrypt's " \
                           "is #{LETS_ENCRYPT})"
    rescue URI::InvalidURIError
      raise ArgumentError, "acme_issuer #{url.inspect} is not a URL"
    end

    def check_contact(contact)
      list = Array(contact)
      list.each do |address|
        next if address.is_a?(String) && address.match?(/\Amailto:[^@\s]+@[^@\s]+\z/)

        raise ArgumentError, "acme_issuer contact: #{address.inspect} is not a mailto: address " \
                             "(contact: \"mailto:ops@example.com\")"
      end
      list.map { |address| address.dup.freeze }.freeze
    end

    def check_terms(accepted)
      return true if accepted == true

      raise ArgumentError, "acme_issuer: ordering certificates means agreeing to the issuer's terms of service; " \
                           "read them (Let's Encrypt's: https://letsencrypt.org/repository/) and add " \
                           "accept_terms_of_service: true"
    end

    # Made now (0700) so that a path the server cannot write fails at load
    # rather than at the first order.
    def check_state_path(path)
      String === path or raise ArgumentError, "acme_issuer state_path: #{path.inspect} is not a path"
      full = File.expand_path(path)
      FileUtils.mkdir_p(full, mode: 0o700)
      File.writable?(full) or raise Errno::EACCES, full
      full.freeze
    rescue SystemCallError => e
      raise ArgumentError, "acme_issuer state_path: #{full} cannot be used (#{e.message}); give the server's " \
                           "user a directory it can write"
    end

    def check_ca_file(path)
      String === path or raise ArgumentError, "acme_issuer ca_file: #{path.inspect} is not a path"
      full = File.expand_path(path)
      File.file?(full) && File.readable?(full) or
        raise ArgumentError, "acme_issuer ca_file: #{full} is not a readable file"
      full.freeze
    end

    def check_challenge(name)
      return name.to_s.dup.freeze if CHALLENGES.include?(name.to_s)

      raise ArgumentError, "acme_issuer challenge: #{name.inspect} is not one of #{CHALLENGES.join(', ')} " \
                           "(leave it out to use both)"
    end

    def check_certificates(lines)
      seen = {}
      lines.map do |names|
        raise ArgumentError, "acme_certificate needs at least one name: acme_certificate \"example.com\"" if names.empty?
        if names.size > MAX_NAMES
          raise ArgumentError, "acme_certificate: #{names.size} names; an issuer takes at most #{MAX_NAMES} in one " \
                               "certificate (Let's Encrypt's limit): split the line"
        end

        names.map do |name|
          name = check_name(name)
          raise ArgumentError, "acme_certificate: #{name} is named twice; give each name once" if seen[name]

          seen[name] = true
          name.freeze
        end.freeze
      end.freeze
    end

    def check_name(name)
      String === name or raise ArgumentError, "acme_certificate: #{name.inspect} is not a host name"
      text = name.downcase
      if text.start_with?("*.")
        raise ArgumentError, "acme_certificate #{name}: wildcard names need the DNS-01 challenge, which the front " \
                             "does not answer; name each host, or use ssl_certificate for a wildcard"
      end
      return text if text.match?(DNS_NAME)

      raise ArgumentError, "acme_certificate #{name.inspect} is not a DNS name an issuer can certify " \
                           "(IP addresses and single labels like localhost are refused)"
    end
  end
end
